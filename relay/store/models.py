"""The store: incident_log (the log of every event and the delivery outbox) and its attempts."""
import json
from datetime import datetime, timezone

import orjson
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.types import TypeDecorator

from relay.store.states import OPEN_SQL, PENDING


def json_text(value) -> str:
    """A JSON column's text: compact UTF-8 from orjson, or the json module's ASCII text for what orjson refuses
    (integers past 64 bits, lone surrogates), as SQLAlchemy wrote it before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


db = SQLAlchemy(engine_options={"json_serializer": json_text})  # SQLALCHEMY_ENGINE_OPTIONS add to these

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every store (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):
        """Mark naive values read back from SQLite as the UTC they were written in."""
        return as_utc(value)


def as_utc(moment):
    """Return a stored moment as an aware UTC datetime; SQLite gives naive ones, or text from min()."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def utcnow():
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


class IncidentLog(db.Model):
    """One event the relay sends or tries to send to PagerDuty."""

    __tablename__ = "incident_log"

    id = db.Column(BigId, primary_key=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    source = db.Column(db.String(32), nullable=False)  # api, cli, alertmanager, grafana, …
    route = db.Column(db.String(128))
    event_action = db.Column(db.String(16), nullable=False)
    dedup_key = db.Column(db.String(255))
    summary = db.Column(db.String(1024))
    severity = db.Column(db.String(16))
    # The full key is needed to deliver from the outbox; only routing_key_masked is ever shown.
    routing_key = db.Column(db.String(255), nullable=False)
    routing_key_masked = db.Column(db.String(16), nullable=False)
    event = db.Column(JSON, nullable=False)  # the Events API body without routing_key
    # The Events API URL every attempt goes to, fixed when stored; NULL (rows from before it was kept): the
    # sending process's PAGERDUTY_EVENTS_URL.
    events_url = db.Column(db.Text)
    alert = db.Column(JSON)  # the inbound alert the event was mapped from, for "what it sent and why"
    status = db.Column(db.String(16), nullable=False, default=PENDING)
    attempts = db.Column(db.Integer, nullable=False, default=0)
    next_attempt_at = db.Column(UTCDateTime, default=utcnow)
    # A delivery worker's lease on the row; once claimed_until passes, another worker may take it over.
    claimed_by = db.Column(db.String(64))
    claimed_until = db.Column(UTCDateTime)
    delivered_at = db.Column(UTCDateTime)
    # PagerDuty's last answer: HTTP status, its status/message/errors, or our transport error.
    http_status = db.Column(db.Integer)
    pd_status = db.Column(db.String(64))
    pd_message = db.Column(db.String(1024))
    pd_errors = db.Column(JSON)
    error = db.Column(db.Text)
    # A superseded row: the row of its alert it was collapsed into (no foreign key: pruning may remove that first).
    superseded_by = db.Column(BigId)
    # Why the relay itself sent the event, when no sender asked for it (the reconciler's "reconciled: gone").
    cause = db.Column(db.Text)

    attempt_rows = db.relationship(
        "DeliveryAttempt", back_populates="log", order_by="DeliveryAttempt.id", lazy="select"
    )

    __table_args__ = (
        db.Index("ix_incident_log_created_at", "created_at"),
        # The outbox proper: only open rows, in acceptance order, so claiming never wades through history.
        db.Index("ix_incident_log_open", "id", sqlite_where=db.text(OPEN_SQL), postgresql_where=db.text(OPEN_SQL)),
        # Per-alert order (an event waits while an earlier one for the same key pair is still open), and the
        # log's dedup_key filter: one index, written once per row.
        db.Index("ix_incident_log_alert_order", "dedup_key", "routing_key", "id"),
    )

    def outbound_event(self):
        """Return the Events API body to POST, routing key included."""
        return {"routing_key": self.routing_key, **self.event}


class DeliveryAttempt(db.Model):
    """One try at delivering an incident_log row to PagerDuty."""

    __tablename__ = "delivery_attempt"

    id = db.Column(BigId, primary_key=True)
    log_id = db.Column(BigId, db.ForeignKey("incident_log.id", ondelete="CASCADE"), nullable=False, index=True)
    started_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    duration_ms = db.Column(db.Float)
    outcome = db.Column(db.String(16), nullable=False)  # sending, then delivered, retry or failed
    http_status = db.Column(db.Integer)
    error = db.Column(db.Text)
    # Which key the attempt spent rate-limit budget on (a hash: the key itself stays in one place).
    routing_key_hash = db.Column(db.String(64))

    __table_args__ = (db.Index("ix_delivery_attempt_rate", "routing_key_hash", "started_at"),)

    log = db.relationship("IncidentLog", back_populates="attempt_rows")


class SeenSignature(db.Model):
    """A signed webhook accepted while its timestamp is within the allowed skew: the same signature again is a
    replay."""

    __tablename__ = "seen_signature"

    digest = db.Column(db.String(64), primary_key=True)  # SHA-256 of the source and its signature
    expires_at = db.Column(UTCDateTime, nullable=False)  # past it, the timestamp check refuses the request anyway

    __table_args__ = (db.Index("ix_seen_signature_expires_at", "expires_at"),)


class DeliveryProcess(db.Model):
    """A running delivery loop as it last reported itself: where it runs, where it sends, when it last beat."""

    __tablename__ = "delivery_process"

    id = db.Column(db.String(255), primary_key=True)  # the worker's id, as in incident_log.claimed_by
    host = db.Column(db.String(255), nullable=False)
    pid = db.Column(db.Integer, nullable=False)
    events_url = db.Column(db.Text, nullable=False)  # its PAGERDUTY_EVENTS_URL: rows the CLI stores for it go there
    started_at = db.Column(UTCDateTime, nullable=False)
    beat_at = db.Column(UTCDateTime, nullable=False)


class EndpointState(db.Model):
    """Whether deliveries reach one PagerDuty Events API URL, shared by every delivery process: up, or down and
    probed one event at a time."""

    __tablename__ = "endpoint_state"

    events_url = db.Column(db.Text, primary_key=True)
    failures = db.Column(db.Integer, nullable=False, default=0)  # outage failures in a row, since the last answer
    down_since = db.Column(UTCDateTime)  # NULL while up
    probe_at = db.Column(UTCDateTime)  # while down: when the next probe may go
    probe_delay = db.Column(db.Float)  # while down: the spacing after the last probe, doubling up to its cap
    probe_until = db.Column(UTCDateTime)  # a probe in flight: its claim's lease
    last_success_at = db.Column(UTCDateTime)  # PagerDuty's last answer (accepted, refused or rate limited)
    last_failure_at = db.Column(UTCDateTime)
    last_error = db.Column(db.Text)  # the last outage failure, as the attempt recorded it (no key, no URL secrets)


class KeyHold(db.Model):
    """A routing key PagerDuty rate limited (429): none of its rows is sent before `until` (its Retry-After)."""

    __tablename__ = "key_hold"

    routing_key_hash = db.Column(db.String(64), primary_key=True)  # as delivery_attempt's: the key lives elsewhere
    until = db.Column(UTCDateTime, nullable=False)


class Lease(db.Model):
    """A periodic duty (relay/delivery/duties.py) and the delivery process that runs it until `until`: one at a time
    across instances; another takes it over once the holder stops renewing."""

    __tablename__ = "lease"

    name = db.Column(db.String(64), primary_key=True)
    holder = db.Column(db.String(255), nullable=False)  # a delivery process's id, as in delivery_process.id
    until = db.Column(UTCDateTime, nullable=False)


class Storm(db.Model):
    """A route's storm while it lasts (relay/store/storm.py): since when its valve holds new alerts, and what the
    summary incident last said."""

    __tablename__ = "storm"

    route = db.Column(db.String(128), primary_key=True)
    started_at = db.Column(UTCDateTime, nullable=False)
    last_held_at = db.Column(UTCDateTime, nullable=False)  # the storm is over once a whole window passes after it
    summary_at = db.Column(UTCDateTime)  # when the summary incident was last triggered; NULL: not yet
    summary_held = db.Column(db.Integer, nullable=False, default=0)  # the held alerts it counted then


class StormTrigger(db.Model):
    """A new alert on a route with a storm valve, sent or held: the valve counts them per window, and the summary
    incident counts the held ones by alertname and by the route's count_by label."""

    __tablename__ = "storm_trigger"

    id = db.Column(BigId, primary_key=True)
    route = db.Column(db.String(128), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False)
    held = db.Column(db.Boolean, nullable=False)
    log_id = db.Column(BigId, nullable=False)  # its incident_log row (no foreign key: pruning may remove that first)
    alertname = db.Column(db.Text)
    counted_label = db.Column(db.Text)  # the value of the route's count_by label, when it has one

    __table_args__ = (db.Index("ix_storm_trigger_route", "route", "created_at"),)


class ReconcileWatch(db.Model):
    """An alert the reconciler (relay/delivery/reconcile.py) watches: triggered through a source it can ask, and how
    many checks in a row found it gone from that source, shared by every instance and kept across restarts."""

    __tablename__ = "reconcile_watch"

    routing_key_hash = db.Column(db.String(64), primary_key=True)  # rate_budget.key_hash: the key lives elsewhere
    dedup_key = db.Column(db.String(255), primary_key=True)
    log_id = db.Column(BigId, nullable=False)  # the alert's newest trigger row seen: its key, route, alert, event
    misses = db.Column(db.Integer, nullable=False, default=0)  # consecutive checks the source did not have it
    checked_at = db.Column(UTCDateTime)


class Heartbeat(db.Model):
    """A heartbeat the relay watches (relay/delivery/heartbeats.py): a route's watchdog per sender or label set, or
    a job from HEARTBEATS; its state and the incident opened while it is down."""

    __tablename__ = "heartbeat"

    key = db.Column(db.String(64), primary_key=True)  # SHA-256 of its kind, name and identity
    kind = db.Column(db.String(16), nullable=False)  # watchdog or job
    name = db.Column(db.String(1024), nullable=False)  # what people and metrics call it
    route = db.Column(db.String(128))  # a watchdog's route
    subject = db.Column(db.Text)  # a watchdog's sender ("Alertmanager at …") or label set
    # The full key is needed to page; only a mask is ever shown.
    routing_key = db.Column(db.String(255), nullable=False)
    severity = db.Column(db.String(16), nullable=False)
    within_seconds = db.Column(db.Float)  # a watchdog's window
    state = db.Column(db.String(16), nullable=False)
    watched_since = db.Column(UTCDateTime, nullable=False)  # first known, or the relay's return from a pause
    last_seen = db.Column(UTCDateTime)
    last_start = db.Column(UTCDateTime)
    last_message = db.Column(db.Text)  # the last check-in's body
    next_expected = db.Column(UTCDateTime)  # late after this
    checked_at = db.Column(UTCDateTime)  # its last evaluation
    changed_at = db.Column(UTCDateTime, nullable=False)  # its state's last change
    dedup_key = db.Column(db.String(255), nullable=False)  # its incident's
