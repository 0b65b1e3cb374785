"""What a long-running relay process does once its app is loaded: say what it will do, once per process group, and
keep its start-up objects out of the garbage collector's way."""
import gc
import logging
import sys

log = logging.getLogger("relay.startup")  # by name: gunicorn.conf.py loads this file on its own

# The exit code of a process that refuses to start on a bad setting or schema: sysexits.h's EX_CONFIG, apart from
# the job commands' codes (3 there means "stored, not yet confirmed").
BAD_CONFIGURATION = 78
STORE_UNAVAILABLE = 75  # sysexits.h's EX_TEMPFAIL: the store cannot be reached now; try again later
# A gunicorn worker's instead: "worker failed to boot", on which its master stops where any other exit starts the
# worker again.
BOOT_ERROR = 3
WARNINGS = "relay.startup_warnings"  # app.extensions key: what the settings leave open, said by announce()


def app_or_exit(exit_code: int = BAD_CONFIGURATION):
    """Build the app from its settings (config.py, RELAY_CONFIG, the environment), or say in one line why not and
    exit with exit_code, never with a traceback."""
    from relay import create_app  # here: gunicorn.conf.py loads this file without the relay package
    from relay.intake.routing import ConfigError

    try:
        return create_app()
    except ConfigError as exc:
        print(f"relay: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def warn(app, message: str) -> None:
    """Keep a warning about the settings for announce(), which says it once per process group, not per process."""
    app.extensions.setdefault(WARNINGS, []).append(message)


def announce(app) -> None:
    """Log one line saying what this relay will do (version, store, PagerDuty endpoint, routes, sources with
    credentials), then the warnings its settings raised."""
    from sqlalchemy.engine import make_url

    from relay import __version__
    from relay.intake.sources import pagerduty

    routing = app.extensions["relay.intake.routing"]
    credentials = sorted(name for name, auth in app.extensions["relay.webhook_auth"].items() if auth.configured
                         or name == pagerduty.NAME and pagerduty.allow_list(  # the routing keys are its credential
                             app.extensions["relay.source_settings"].get(name)))
    store = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)
    routes = len(routing.routes)
    log.info("relay %s starting: store %s, PagerDuty %s, %d route(s)%s, webhook credentials for %s", __version__,
             store, app.config["PAGERDUTY_EVENTS_URL"], routes, " and a default route" if routing.default else "",
             ", ".join(credentials) or "no source",
             extra={"version": __version__, "store": store, "pagerduty_events_url": app.config["PAGERDUTY_EVENTS_URL"],
                    "routes": routes, "default_route": routing.default is not None,
                    "sources_with_credentials": credentials})
    for message in app.extensions.get(WARNINGS, []):
        log.warning(message)


def freeze_startup_objects() -> int:
    """Keep the objects loaded at start-up out of full garbage collections; log and return how many there are.

    A full collection walks every tracked object: with the app loaded, about 100,000, which took about 100 ms on
    a 2-core machine. In a web worker that stalls the request that set it off and every one queued behind it; in
    the delivery process it can happen while a claim holds SQLite's write lock, which every webhook then waits for.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the garbage collector's way", frozen)
    return frozen
