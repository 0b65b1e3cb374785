"""The `relay` command group: each command module registers its commands on it."""
from flask.cli import AppGroup

relay_cli = AppGroup("relay", help="Send PagerDuty events through the relay.")
