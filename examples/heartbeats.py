"""Example heartbeats: start the relay with RELAY_CONFIG=examples/heartbeats.py (see docs/heartbeats.md)."""

ROUTES = [
    # The dead man's switch of the monitoring itself: Prometheus's always-firing Watchdog rule, through each
    # Alertmanager, is a heartbeat per Alertmanager (its externalURL); 5 minutes without one pages.
    {
        "name": "watchdog",
        "matchers": ['alertname="Watchdog"'],
        "routing_key_env": "PAGERDUTY_ROUTING_KEY",
        "heartbeat": {"within": "5m"},
    },
]

HEARTBEATS = [
    # A job run by cron at 03:00 Berlin time, given 30 minutes to finish and check in.
    {"name": "nightly-backup", "cron": "0 3 * * *", "tz": "Europe/Berlin", "grace": "30m",
     "routing_key_env": "PAGERDUTY_ROUTING_KEY", "summary": "The nightly backup did not finish"},
    # A job that runs every hour, whenever it started; it may be 10 minutes late.
    {"name": "sync-invoices", "every": "1h", "grace": "10m", "routing_key_env": "PAGERDUTY_ROUTING_KEY",
     "severity": "warning"},
]
