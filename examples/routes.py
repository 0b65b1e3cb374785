"""Example routes: start the relay with RELAY_CONFIG=examples/routes.py (see docs/routing.md)."""

ROUTES = [
    # 1. Team routing: the database team's production and staging alerts page their service, with their own
    #    severity words; "continue" also sends them on to the audit route below.
    {
        "name": "database",
        "matchers": ['team="db"', 'env=~"prod|staging"'],
        "routing_key_env": "PD_DATABASE_KEY",
        "severity_label": "severity",
        "severity_map": {"page": "critical", "ticket": "warning", "fyi": "info"},
        "default_severity": "error",
        "continue": True,
    },
    {
        "name": "audit",
        "matchers": ['env="prod"'],
        "routing_key_env": "PD_AUDIT_KEY",
        "builtin_severities": False,  # the built-in words (page, P1, high…) mean nothing here: all is info
        "default_severity": "info",
        "templates": {"summary": "[{{ labels.env }}] {{ labels.alertname }} for {{ labels.team or 'no team' }}"},
    },
    # 2. The routing key from a label: each alert rule names the PagerDuty service it pages
    #    (labels: pagerduty_key: <integration key>), and the details are chosen by hand.
    {
        "name": "by-label",
        "matchers": ['pagerduty_key=~"[a-z0-9]{32}"'],
        "routing_key_template": "{{ labels.pagerduty_key }}",
        "custom_details": {"rule": "{{ labels.alertname }}", "runbook": "{{ annotations.runbook_url }}"},
    },
]
# 3. The catch-all, for migrating from Alertmanager's native PagerDuty integration: dedup "group" gives the same
#    dedup key (sha256 of groupKey), so incidents opened before the switch are resolved through the relay.
DEFAULT_ROUTE = {"name": "catch-all", "routing_key_env": "PAGERDUTY_ROUTING_KEY", "dedup": "group"}
