"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app` and `flask --app wsgi …`."""
import sys

from relay import create_app
from relay.intake.routing import ConfigError
from relay.startup.process import BAD_CONFIGURATION, BOOT_ERROR

try:
    app = create_app()
except ConfigError as exc:
    print(f"relay: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(BOOT_ERROR if "gunicorn" in sys.modules else BAD_CONFIGURATION) from None
