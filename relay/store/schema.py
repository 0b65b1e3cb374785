"""The store's schema at start-up: brought up to date once, under a lock several starting processes share, or, with
RELAY_AUTO_MIGRATE=0, found behind and refused with what to run."""
import logging

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from relay.store import failures
from relay.store.models import db
from relay.store.outbox import backend

log = logging.getLogger(__name__)
UPGRADE_COMMAND = "flask --app wsgi db upgrade"


class SchemaError(Exception):
    """The schema is not the one this relay needs, or the store cannot be reached to tell; the message says why."""


class StoreUnreachable(SchemaError):
    """The store cannot be reached to tell: an outage, not a setting to fix; problem says why and where."""

    def __init__(self, problem):
        super().__init__(f"the store cannot be used: {problem}")
        self.problem = problem


def _alembic_config(app):
    """Flask-Migrate's Alembic configuration of the app: migrations/ and its env.py."""
    migrate = app.extensions["migrate"]
    return migrate.migrate.get_config(migrate.directory)


def _revisions(app) -> tuple[set[str], set[str], set[str]]:
    """The store's current revisions, the code's heads, and every revision the code knows."""
    chatter = logging.getLogger("alembic.runtime.migration")  # says which DDL mode it assumes, at INFO, each time
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    try:
        with db.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        chatter.setLevel(level)
    script = ScriptDirectory.from_config(_alembic_config(app))
    return current, set(script.get_heads()), {revision.revision for revision in script.walk_revisions()}


def _describe(revisions: set[str]) -> str:
    """Name revisions for a person."""
    return ", ".join(sorted(revisions)) or "none (an empty database)"


def _reason(exc: Exception) -> str:
    """The first line of a database error, which names what failed (never a parameter: hide_parameters)."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def ensure_current(app) -> None:
    """Bring the store's schema up to date (RELAY_AUTO_MIGRATE), or raise SchemaError if it is behind."""
    try:
        current, heads, known = _revisions(app)
    except SQLAlchemyError as exc:
        problem = failures.describe(exc, db.engine.url)
        if problem is None:
            raise SchemaError(f"the store cannot be used: {_reason(exc)}") from None
        raise StoreUnreachable(problem) from None
    if current == heads:
        return
    if current - known:
        raise SchemaError(f"the database schema is at revision {_describe(current - known)}, which this relay does "
                          f"not know (it needs {_describe(heads)}): was the store migrated by a newer relay?")
    if not app.config["RELAY_AUTO_MIGRATE"]:
        raise SchemaError(f"the database schema is behind: at revision {_describe(current)}, this relay needs "
                          f"{_describe(heads)}; run `{UPGRADE_COMMAND}` (or unset RELAY_AUTO_MIGRATE=0)")
    try:
        with backend(db.engine).migration_lock(db.engine):
            current, heads, _ = _revisions(app)  # another process may have migrated while this one waited
            if current != heads:
                log.info("bringing the database schema up to date: %s → %s", _describe(current), _describe(heads))
                command.upgrade(_alembic_config(app), "head")
    except CommandError as exc:
        raise SchemaError(f"cannot bring the database schema up to date: {exc}") from None
    except SQLAlchemyError as exc:
        raise SchemaError(f"cannot bring the database schema up to date: {_reason(exc)}") from None
