"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app` and `flask --app wsgi …`."""
import sys

from relay import create_app
from relay.intake.routing import ConfigError

BOOT_ERROR = 3  # gunicorn's "worker failed to boot": its master stops, where any other exit starts the worker again

try:
    app = create_app()
except ConfigError as exc:
    print(f"relay: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(BOOT_ERROR) from None
