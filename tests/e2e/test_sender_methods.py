"""The relay under gunicorn, over a real socket: Grafana's webhook sent with PUT (its contact point's HTTP Method
option) is accepted with its credential and delivered to the PagerDuty simulator; Alertmanager's webhook, which
only ever POSTs, answers PUT with a 405 naming POST (and OPTIONS, which Flask answers on every URL)."""
import secrets
from pathlib import Path

import requests

from .harness import relay_server, wait_for

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
TOKEN = "e2e-put-" + secrets.token_hex(12)


def test_grafana_put_over_a_real_socket_is_delivered(tmp_path, pd):
    body = (UPSTREAM / "grafana-alerting-max-alerts-truncated.json").read_bytes()
    with relay_server(tmp_path, pd.events_url, extra_env={"RELAY_GRAFANA_TOKEN": TOKEN}) as relay:
        url = relay.url + "/webhooks/grafana"
        headers = {"Content-Type": "application/json"}
        refused = requests.put(url, data=body, headers=headers, timeout=10)
        assert refused.status_code == 401  # a PUT is authenticated as a POST is
        answer = requests.put(url, data=body, headers={**headers, "Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert answer.status_code == 202 and answer.json()["accepted"] == 2
        wait_for(lambda: len(pd.accepted()) == 2, 20, message="both alerts delivered")
        assert {event["routing_key"] for event in pd.accepted()} == {relay.routing_key}

        put = requests.put(relay.alertmanager_webhook, data=body, headers=headers, timeout=10)
        assert put.status_code == 405 and sorted(put.headers["Allow"].split(", ")) == ["OPTIONS", "POST"]
        assert put.json()["error"]["message"] == "this URL takes POST, not PUT"
