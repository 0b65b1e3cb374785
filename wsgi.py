"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app` and `flask --app wsgi …`."""
import sys

from relay.startup.process import BAD_CONFIGURATION, BOOT_ERROR, app_or_exit

app = app_or_exit(BOOT_ERROR if "gunicorn" in sys.modules else BAD_CONFIGURATION)
