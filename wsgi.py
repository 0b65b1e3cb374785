"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app` and `flask --app wsgi …`."""
from relay import create_app
from relay.intake.routing import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    raise SystemExit(f"relay: configuration error: {exc}") from None
