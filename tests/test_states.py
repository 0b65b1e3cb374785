"""The delivery state machine: where each answer from PagerDuty leaves a row, and who reports it."""
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY

from relay import logs, metrics
from relay.pagerduty.client import Delivery
from relay.pagerduty.retry import RetryPolicy
from relay.store import states

POLICY = RetryPolicy(base_seconds=10, max_seconds=100, give_up_seconds=3600)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
YOUNG = NOW - timedelta(seconds=60)
OLD = NOW - timedelta(seconds=3600)  # exactly the give-up age


@dataclass
class Row:
    """What the transition reads of a claimed row."""

    created_at: datetime
    attempts: int = 1
    log_id: int = 1
    event: dict = None


@pytest.mark.parametrize("outcome, created_at, status", [
    (states.DELIVERED, YOUNG, states.DELIVERED),
    (states.DELIVERED, OLD, states.DELIVERED),  # an answer that came in time is never given up
    (states.FAILED, YOUNG, states.FAILED),
    (states.FAILED, OLD, states.FAILED),  # refused, not given up: retrying never helped
    (states.RETRY, YOUNG, states.RETRYING),
    (states.RETRY, OLD, states.DEAD),
])
def test_each_answer_moves_the_row_to_one_state(outcome, created_at, status):
    moved = states.after(Row(created_at), Delivery(outcome), NOW, POLICY)
    assert moved.status == status
    assert (moved.due_at > NOW) == (status == states.RETRYING)


def test_a_retry_is_due_after_the_backoff_or_retry_after():
    moved = states.after(Row(YOUNG, attempts=3), Delivery(states.RETRY, retry_after=90), NOW, POLICY)
    assert moved.due_at == NOW + timedelta(seconds=90)  # Retry-After beats the 20-40 s of backoff


def test_the_groupings_partition_the_states():
    assert set(states.OPEN) | set(states.FINISHED) == set(states.STATUSES)
    assert not set(states.OPEN) & set(states.FINISHED)
    assert set(states.REPLAYABLE) <= set(states.FINAL) and states.DELIVERED not in states.REPLAYABLE
    assert states.OPEN_SQL == "status IN (%s)" % ", ".join(f"'{status}'" for status in states.OPEN)


def test_metrics_and_logs_report_the_stores_transition(caplog):
    """At the give-up age a metric or log line deciding again, a moment later, could disagree with the row."""
    results = [(Row(YOUNG, event={"routing_key": "k" * 32}), Delivery(states.RETRY, 503)),
               (Row(YOUNG, log_id=2, event={"routing_key": "k" * 32}), Delivery(states.RETRY, 503))]
    moves = [states.Transition(states.DEAD, NOW), states.Transition(states.RETRYING, NOW)]
    def counts():
        return [REGISTRY.get_sample_value(name) or 0 for name in ("relay_rows_given_up_total",
                                                                   "relay_retries_scheduled_total")]

    before = counts()
    with caplog.at_level(logging.WARNING, logger="relay.delivery.worker"):
        metrics.delivered(results, moves, now=NOW)
        logs.delivery_outcomes(results, moves)
    assert [after - was for after, was in zip(counts(), before)] == [1, 1]
    assert [record.levelname for record in caplog.records] == ["ERROR", "WARNING"]
    assert "given up" in caplog.records[0].getMessage()
