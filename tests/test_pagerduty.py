"""The Events API client: which answers retry, and real sends to the simulator."""
import socket
import threading
import time

import pytest

from relay.pagerduty.client import USER_AGENT, PagerDutyClient, classify, parse_retry_after, safe_url
from relay.pagerduty.event import encode
from relay.store.states import DELIVERED, FAILED, RETRY

ACCEPTED = {"status": "success", "message": "Event processed", "dedup_key": "k1"}  # 01-Overview.md


@pytest.mark.parametrize("http_status, outcome", [
    (400, FAILED),
    (413, FAILED),
    (301, RETRY),
    (307, RETRY),
    (401, RETRY),
    (403, RETRY),
    (404, RETRY),
    (407, RETRY),
    (408, RETRY),
    (429, RETRY),
    (500, RETRY),
    (502, RETRY),
    (503, RETRY),
    (504, RETRY),
])
def test_classify_status(http_status, outcome):
    assert classify(http_status, None).outcome == outcome


@pytest.mark.parametrize("http_status, body", [
    (202, ACCEPTED),
    (202, {"status": "success"}),
])
def test_classify_counts_only_pagerdutys_acceptance_as_delivered(http_status, body):
    delivery = classify(http_status, body)
    assert (delivery.outcome, delivery.misdirected) == (DELIVERED, False)


@pytest.mark.parametrize("http_status, body", [
    (202, None),  # no body, HTML, or a body cut off: not JSON
    (202, {}),
    (202, {"status": "error", "message": "captive"}),
    (202, ["success"]),
    (200, ACCEPTED),  # PagerDuty answers 202, never 200
    (201, ACCEPTED),
    (204, None),
])
def test_classify_retries_any_other_2xx_and_says_why(http_status, body):
    delivery = classify(http_status, body)
    assert (delivery.outcome, delivery.misdirected) == (RETRY, True)
    assert f"HTTP {http_status} without PagerDuty's acceptance" in delivery.message


@pytest.mark.parametrize("http_status", [301, 302, 307, 308, 401, 403, 404, 407])
def test_classify_retries_answers_no_events_api_gives_as_misdirected(http_status):
    delivery = classify(http_status, None, {"Location": "https://user:pw@portal.example/login?key=x#f"})
    assert (delivery.outcome, delivery.misdirected) == (RETRY, True)
    assert "the events URL is wrong or a proxy is in the way" in delivery.message
    assert "pw" not in delivery.message and "key=x" not in delivery.message
    assert ("to https://portal.example/login" in delivery.message) == (http_status < 400)


@pytest.mark.parametrize("http_status", [400, 429, 500, 503])
def test_classify_pagerdutys_own_answers_are_not_misdirected(http_status):
    assert classify(http_status, {"status": "x"}).misdirected is False


@pytest.mark.parametrize("url, safe", [
    ("https://events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com/v2/enqueue"),
    ("https://user:secret@proxy.example:8443/v2/enqueue?token=t#x", "https://proxy.example:8443/v2/enqueue"),
    ("http://[::1]:8080/v2/enqueue", "http://[::1]:8080/v2/enqueue"),
    ("/relative/login", "/relative/login"),
])
def test_safe_url_drops_credentials_query_and_fragment(url, safe):
    assert safe_url(url) == safe


def test_classify_keeps_pagerduty_errors_array():
    body = {"status": "invalid event", "message": "Event object is invalid",
            "errors": ["'payload.severity' is invalid", "Invalid routing key"]}
    delivery = classify(400, body)
    assert delivery.outcome == FAILED
    assert delivery.errors == ["'payload.severity' is invalid", "Invalid routing key"]
    assert delivery.message == "Event object is invalid"


def test_classify_reads_accepted_body():
    delivery = classify(202, ACCEPTED)
    assert (delivery.ok, delivery.status, delivery.dedup_key) == (True, "success", "k1")
    assert (delivery.message, delivery.misdirected) == ("Event processed", False)


def test_classify_without_json_body_names_the_status():
    assert classify(503, None).message == "HTTP 503"


@pytest.mark.parametrize("header, seconds", [
    ("5", 5.0), ("0.5", 0.5), ("0", 0.0), ("-3", None), ("soon", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None),
])
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header) == seconds


def test_classify_reads_retry_after_header():
    assert classify(429, {}, {"Retry-After": "7"}).retry_after == 7.0


def _trigger(routing_key, **extra):
    return {"routing_key": routing_key, "event_action": "trigger",
            "payload": {"summary": "disk full", "source": "db-1", "severity": "error"}, **extra}


@pytest.fixture
def pd_client(pd):
    client = PagerDutyClient(pd.events_url, connect_timeout=1, read_timeout=1)
    yield client
    client.close()


def test_send_accepted_event_returns_generated_dedup_key(pd, pd_client, routing_key):
    delivery = pd_client.send(_trigger(routing_key))
    assert delivery.outcome == DELIVERED and delivery.http_status == 202
    assert len(delivery.dedup_key) == 32
    assert pd.accepted()[0]["routing_key"] == routing_key
    assert delivery.duration_ms > 0


def test_send_refused_event_is_failed_with_errors(pd, pd_client, routing_key):
    pd.set_routing_keys([routing_key])
    delivery = pd_client.send(_trigger("b" * 32))
    assert delivery.outcome == FAILED and delivery.http_status == 400
    assert delivery.errors == ["Invalid routing key"]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_send_injected_fault_is_retryable(pd, pd_client, routing_key, status):
    pd.inject(status, count=1, retry_after="3")
    delivery = pd_client.send(_trigger(routing_key))
    assert (delivery.outcome, delivery.http_status, delivery.retry_after) == (RETRY, status, 3.0)
    assert pd_client.send(_trigger(routing_key)).ok


def test_send_timeout_is_retryable(pd, routing_key):
    pd.set_latency(1.0)
    client = PagerDutyClient(pd.events_url, connect_timeout=1, read_timeout=0.2)
    delivery = client.send(_trigger(routing_key))
    assert (delivery.outcome, delivery.error) == (RETRY, "timeout")
    assert delivery.duration_ms < 900


def test_send_connection_refused_is_retryable(routing_key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        client = PagerDutyClient(f"http://127.0.0.1:{port}/v2/enqueue", connect_timeout=1, read_timeout=1)
        delivery = client.send(_trigger(routing_key))
    assert delivery.outcome == RETRY and delivery.http_status is None
    assert delivery.error.startswith("ConnectionError")


def test_send_outage_that_drops_connections_is_retryable(pd, pd_client, routing_key):
    pd.set_outage("refuse")
    assert pd_client.send(_trigger(routing_key)).outcome == RETRY


def test_send_never_returns_the_routing_key(pd, pd_client, routing_key):
    pd.set_routing_keys(["c" * 32])
    delivery = pd_client.send(_trigger(routing_key))
    assert routing_key not in repr(delivery)


def test_send_goes_through_the_environment_proxy(pd, routing_key, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", pd.url)  # the simulator answers absolute-form requests as a proxy would
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = PagerDutyClient("http://events.pagerduty.invalid/v2/enqueue", connect_timeout=1, read_timeout=1)
    assert client.send(_trigger(routing_key)).ok
    assert pd.accepted()[-1]["routing_key"] == routing_key
    client.close()


def test_send_skips_the_proxy_for_no_proxy_hosts(pd, routing_key, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = PagerDutyClient(pd.events_url, connect_timeout=1, read_timeout=1)
    assert client.send(_trigger(routing_key)).ok
    client.close()


def _answer_once(answer: bytes, pause: float = 0.0, at_once: int = 0):
    """Serve one connection on a free port with a canned answer, then close it; return its URL and the request
    bytes it got. With a pause, the answer's first `at_once` bytes go at once, then a byte every `pause` seconds."""
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve():
        conn, _ = server.accept()
        with conn, server:
            data = b""
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
                data += conn.recv(65536)
            received.append(data)
            try:
                if not pause:
                    conn.sendall(answer)
                else:
                    conn.sendall(answer[:at_once])
                    for index in range(at_once, len(answer)):
                        conn.sendall(answer[index:index + 1])
                        time.sleep(pause)
            except OSError:
                pass  # the client gave up on us

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/v2/enqueue", received, thread


def _content_length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]) if b"content-length:" in head else 0


def test_send_never_follows_a_redirect_and_retries_it(routing_key):
    url, received, thread = _answer_once(b"HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:9/\r\n"
                                         b"Content-Length: 0\r\n\r\n")
    client = PagerDutyClient(url, connect_timeout=1, read_timeout=1)
    delivery = client.send(_trigger(routing_key))
    thread.join(1)
    client.close()
    assert (delivery.outcome, delivery.http_status, delivery.misdirected) == (RETRY, 301, True)
    assert len(received) == 1


SUCCESS = b'{"status":"success","message":"Event processed","dedup_key":"k1"}'


@pytest.mark.parametrize("answer", [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 33\r\n\r\n"
                 b"<html><body>Sign in</body></html>", id="captive portal page"),
    pytest.param(b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\n\r\nnot json at ", id="202 not JSON"),
    pytest.param(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n", id="closed inside the headers"),
    pytest.param(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", id="202 empty"),
])
def test_send_counts_no_answer_but_pagerdutys_as_delivered(routing_key, answer):
    url, received, thread = _answer_once(answer)
    client = PagerDutyClient(url, connect_timeout=1, read_timeout=1)
    delivery = client.send(_trigger(routing_key))
    thread.join(1)
    client.close()
    assert delivery.outcome == RETRY, delivery


def test_send_reads_pagerdutys_acceptance(routing_key):
    url, received, thread = _answer_once(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: %d\r\n\r\n%s" % (len(SUCCESS), SUCCESS))
    client = PagerDutyClient(url, connect_timeout=1, read_timeout=1)
    delivery = client.send(_trigger(routing_key))
    thread.join(1)
    client.close()
    assert (delivery.outcome, delivery.dedup_key) == (DELIVERED, "k1")


PADDED = SUCCESS + b" " * 40
HEAD = b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n" % len(PADDED)


@pytest.mark.parametrize("answer, at_once", [
    pytest.param(HEAD + PADDED, 0, id="headers trickled"),
    pytest.param(HEAD + PADDED, len(HEAD), id="body trickled"),
])
def test_send_gives_up_on_an_answer_trickled_past_its_deadline(routing_key, answer, at_once):
    """Each byte comes well within the read timeout, the whole answer long after connect + read timeouts."""
    url, received, thread = _answer_once(answer, pause=0.05, at_once=at_once)
    client = PagerDutyClient(url, connect_timeout=0.3, read_timeout=0.5)
    started = time.monotonic()
    delivery = client.send(_trigger(routing_key))
    took = time.monotonic() - started
    client.close()
    thread.join(len(answer) * 0.05 + 1)  # the server notices the closed connection at its next byte
    assert (delivery.outcome, delivery.error) == (RETRY, "timeout"), delivery
    assert "within the send's 0.8 s" in delivery.message
    assert 0.75 <= took < 2.0  # today: the whole answer, over 6 s


def test_a_reused_connection_gets_a_fresh_deadline(pd, routing_key):
    client = PagerDutyClient(pd.events_url, connect_timeout=0.3, read_timeout=0.5)
    for _ in range(2):
        assert client.send(_trigger(routing_key)).ok
        time.sleep(0.9)  # past the last send's deadline
    assert len({record["client_port"] for record in pd.received()}) == 1  # one kept-alive connection
    client.close()


def test_send_posts_the_encoded_event_with_only_the_clients_headers(routing_key, monkeypatch, tmp_path):
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))  # the session trusts nothing from the environment
    url, received, thread = _answer_once(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s"
                                         % (len(SUCCESS), SUCCESS))
    client = PagerDutyClient(url, connect_timeout=1, read_timeout=1)
    assert client.send(_trigger(routing_key)).ok
    thread.join(1)
    client.close()
    head, body = received[0].split(b"\r\n\r\n", 1)
    assert body == encode(_trigger(routing_key))
    assert sorted(head.decode().split("\r\n")[1:]) == sorted([
        f"Host: {url.split('/')[2]}", "Accept-Encoding: identity", f"Content-Length: {len(body)}",
        "Content-Type: application/json", f"User-Agent: {USER_AGENT}"])
