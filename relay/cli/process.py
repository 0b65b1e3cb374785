"""The relay's processes from a shell: the delivery worker, gunicorn's prepare, and the schema check that runs
before every command that uses the store."""
import functools
import logging
import os
import signal
import sys
import threading
import time

import click
from flask import current_app
from flask.cli import ScriptInfo

from relay.cli.group import relay_cli
from relay.delivery import worker
from relay.startup.process import BAD_CONFIGURATION, STORE_UNAVAILABLE, announce, freeze_startup_objects
from relay.store import failures, schema

log = logging.getLogger(__name__)


@relay_cli.command("worker")
@click.option("--parent-pid", type=int, default=None,
              help="Stop once process PID is no longer this one's parent (gunicorn's master passes its own).")
def run_worker(parent_pid):
    """Run a delivery worker in the foreground until SIGINT or SIGTERM (for RELAY_DELIVERY=0 set-ups)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    os.nice(current_app.config["RELAY_DELIVERY_NICE"])
    running = worker.start(current_app._get_current_object())
    if parent_pid is None:  # under gunicorn, its master said it all before it started this process
        announce(current_app)
    log.info("delivery worker %s running", running.id)
    freeze_startup_objects()
    heartbeat = current_app.config["RELAY_DELIVERY_HEARTBEAT_FILE"]
    while True:
        if heartbeat and running.alive and not _touch(heartbeat):
            heartbeat = ""  # said once in the log; /readyz will say the rest
        if stop.wait(1.0):
            break
        if not running.thread.is_alive():
            raise click.ClickException("the delivery loop stopped unexpectedly; see the log")
        if not running.alive:  # stuck in one step: its threads cannot be stopped, the process can be replaced
            log.error("the delivery loop has not come round for %.0f s; exiting so a new process takes over",
                      worker.stalled_after(running.poll_seconds))
            logging.shutdown()
            os._exit(1)
        if parent_pid and os.getppid() != parent_pid:  # a master killed with -9 runs no on_exit
            log.warning("the parent process %d is gone; stopping delivery", parent_pid)
            break
    worker.stop()
    log.info("delivery worker %s stopped", running.id)


def _touch(path) -> bool:
    """Mark the delivery loop alive for /readyz in the web workers; False, logged, if the file cannot be written."""
    try:
        with open(path, "a"):
            os.utime(path)
    except OSError as exc:
        log.warning("cannot touch the delivery heartbeat file %s: %s", path, exc.strerror)
        return False
    return True


@relay_cli.command("prepare")
def prepare():
    """Bring the store's schema up to date and say what the relay will do (gunicorn.conf.py runs this once, before
    its workers start)."""
    announce(current_app)


def schema_first(command):
    """Have a command bring the store's schema up to date (or refuse, in one line) before it runs."""
    run = command.callback

    @functools.wraps(run)
    def checked(*args, **kwargs):
        app = click.get_current_context().ensure_object(ScriptInfo).load_app()
        with app.app_context():
            _ensure_schema(app, command.name)
        return run(*args, **kwargs)

    command.callback = checked


def _ensure_schema(app, command_name: str) -> None:
    """Bring the schema up to date. A store that cannot be reached is an outage, not a mistake: the delivery
    process waits for it (and migrates then), gunicorn's start-up goes on (webhooks get 503 meanwhile), and any
    other command exits STORE_UNAVAILABLE; a schema problem is one line and BAD_CONFIGURATION."""
    outage = failures.Outage(log, "the delivery process waits for it before it starts")
    while True:
        try:
            schema.ensure_current(app)
            outage.recovered()
            return
        except schema.StoreUnreachable as exc:
            if command_name == "worker":
                _wait_beating(app, outage.failed(exc.problem))
                continue
            if command_name == "prepare":
                log.warning("%s; starting anyway: requests that need the store get 503 until it is back, and the "
                            "delivery process brings the schema up to date then", exc)
                return
            click.echo(f"relay: {exc}", err=True)
            sys.exit(STORE_UNAVAILABLE)
        except schema.SchemaError as exc:
            click.echo(f"relay: {exc}", err=True)
            sys.exit(BAD_CONFIGURATION)


def _wait_beating(app, seconds: float) -> None:
    """Wait, touching the delivery heartbeat file each second: waiting for the store is no stall."""
    heartbeat = app.config["RELAY_DELIVERY_HEARTBEAT_FILE"]
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if heartbeat:
            _touch(heartbeat)
        time.sleep(min(left, 1.0))
