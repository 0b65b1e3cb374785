"""The relay: receives alerts, logs them as PagerDuty events, and delivers them."""
import os

from flask import Flask
from flask_migrate import Migrate

import config
from relay import cli, errors, logs
from relay.intake import configure
from relay.intake.routing import ConfigError
from relay.intake.sources import SOURCES, settings_key
from relay.startup import settings
from relay.store import postgres, sqlite
from relay.store.models import db
from relay.web import api, auth, checkins, dropin, health, openapi, page, payloads, scrape, webhooks

__version__ = "0.1.0"
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
migrate = Migrate()


def create_app(test_config=None):
    """Build the relay app from Config, overridden by test_config."""
    app = Flask(__name__, instance_relative_config=True, static_folder="web/static",
                template_folder="web/templates")
    app.config.from_object(config.Config)
    problems = list(config.environment.problems)
    if os.environ.get("RELAY_CONFIG"):
        known = {*app.config, *settings.LIBRARY_SETTINGS, *(settings_key(source) for source in SOURCES.values())}
        from_file, file_problems = settings.read_config_file(os.path.abspath(os.environ["RELAY_CONFIG"]), known)
        app.config.from_mapping(from_file)
        problems += file_problems
    if test_config:
        app.config.from_mapping(test_config)
    if problems:
        raise ConfigError("; ".join(problems))
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "relay.sqlite3")
    logs.init_app(app)  # first, so what the other init_app say at start-up is logged as JSON

    sqlite.init_app(app)  # before any connection: SQLite's are tuned as they open
    postgres.init_app(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    configure.init_app(app)
    payloads.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(scrape.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(dropin.bp)  # PagerDuty's own Events API paths, for tools that speak it
    checkins.init_app(app)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(page.bp)  # the log page at /
    cli.init_app(app)
    return app

