"""Example generic-source settings: start the relay with RELAY_CONFIG=examples/generic-webhook.py."""

# For a tool that sends {"id": …, "title": …, "state": "problem" | "recovered", "level": …, "tags": {…}}.
GENERIC_WEBHOOK = {
    "summary": ["title", "message"],
    "status": "state",
    "severity": "level",
    "dedup_key": "id",
    "labels": "tags",
    "firing_values": ["problem", "alerting"],
    "resolved_values": ["ok", "recovered"],
}
