"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app` and `flask --app wsgi …`."""
from relay import create_app

app = create_app()
