"""Heartbeats, a dead man's switch: for the monitoring itself (a route's watchdog alerts, one heartbeat per sender or
label set) and for jobs that must run (HEARTBEATS, checking in at /heartbeats/<name>).

Their state lives in the store (the heartbeat table). Arrivals (a watchdog alert, a check-in) bring a heartbeat up
and resolve its incident; the evaluation duty, in one delivery process at a time, finds those silent past their
window and triggers theirs. Every incident goes through the outbox like any other event, with one dedup key per
heartbeat. After the relay itself was not evaluating (stopped, all instances down), every heartbeat gets one full
window before it is judged again, so a return never pages for senders that had no chance to check in.
"""
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import delete, select, update

from relay.delivery.duties import Duty
from relay.intake.routing import ConfigError, Duration, Watchdog, fixed_routing_key, problem_text
from relay.intake.sources import client_name
from relay.masking import mask
from relay.pagerduty.event import SEVERITIES, SUMMARY_MAX, load_event, truncate
from relay.store import outbox
from relay.store.models import Heartbeat

log = logging.getLogger(__name__)

DUTY = "heartbeats"  # the evaluation duty's lease
SOURCE = "heartbeats"  # incident_log.source of the incidents they open and close
WATCHDOG, JOB = "watchdog", "job"
# A heartbeat's states: starting (watched, not yet judged: new, or the relay is back from a pause), up (on time),
# late (a job past its expected time, within its grace: not paged), down (paged: silent past its window, or a job
# reported a failure). Only an arrival brings one back up.
STARTING, UP, LATE, DOWN = "starting", "up", "late", "down"
STATES = (STARTING, UP, LATE, DOWN)
SUCCESS, START, FAIL = "success", "start", "fail"  # what a job's check-in reports
MESSAGE_MAX = 10_000  # characters of a check-in's body kept as its last message
DEFAULT_GRACE_SECONDS = 300


class JobSchema(Schema):
    """One job of HEARTBEATS: a name, `every` or `cron` (with `tz`), `grace`, a routing key, severity, summary."""

    class Meta:
        unknown = RAISE  # a misspelt option must fail at start-up

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", error=(
        "Must be 1 to 128 letters, digits, '.', '_' or '-' (it is a URL path segment).")))
    every = Duration()
    cron = fields.String(validate=validate.Length(min=1))
    tz = fields.String(load_default="UTC")
    grace = Duration(load_default=DEFAULT_GRACE_SECONDS)
    routing_key = fields.String(validate=validate.Length(min=1))
    routing_key_env = fields.String(validate=validate.Length(min=1))
    severity = fields.String(load_default="critical", validate=validate.OneOf(SEVERITIES))
    summary = fields.String(validate=validate.Length(min=1, max=SUMMARY_MAX))

    @validates_schema
    def one_schedule_and_one_key(self, data, **kwargs):
        """Require exactly one schedule and exactly one way of finding the routing key; check the cron and zone."""
        if ("every" in data) == ("cron" in data):
            raise ValidationError("give exactly one of every, cron", "every")
        if ("routing_key" in data) == ("routing_key_env" in data):
            raise ValidationError("give exactly one of routing_key, routing_key_env", "routing_key")
        try:
            zone = ZoneInfo(data["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"{data['tz']!r} is not a time zone such as Europe/Berlin", "tz") from None
        if "cron" in data:
            try:
                next(CronSim(data["cron"], datetime.now(zone)))
            except (CronSimError, StopIteration) as exc:
                raise ValidationError(f"{data['cron']!r} is not a cron expression: {exc}", "cron") from None


job_schema = JobSchema()


@dataclass(frozen=True)
class Job:
    """A checked job heartbeat."""

    name: str
    routing_key: str
    every: float | None = None  # seconds between check-ins, or None on a cron schedule
    cron: str | None = None
    tz: str = "UTC"
    grace: float = DEFAULT_GRACE_SECONDS
    severity: str = "critical"
    summary: str | None = None

    def expected_after(self, moment: datetime) -> datetime:
        """When the check-in after one at `moment` is due: a period later, or the schedule's next time in its
        zone (cronsim keeps wall-clock times across daylight-saving changes)."""
        if self.every is not None:
            return moment + timedelta(seconds=self.every)
        return next(CronSim(self.cron, moment.astimezone(ZoneInfo(self.tz)))).astimezone(timezone.utc)


def describe_job(job: Job) -> str:
    """One line per job heartbeat, for people checking their configuration."""
    schedule = f"every {_duration(job.every)}" if job.every is not None else f"cron {job.cron!r} in {job.tz}"
    return f"heartbeat {job.name}: {schedule}, grace {_duration(job.grace)} → key {mask(job.routing_key)}"


def load_jobs(raw, environ=os.environ) -> dict[str, Job]:
    """Check HEARTBEATS from config; raise ConfigError naming the job and field of the first problem."""
    if not raw:
        return {}
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"HEARTBEATS must be a list of dicts, not {type(raw).__name__}")
    jobs = {}
    for position, item in enumerate(raw, 1):
        name = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else f"#{position}"
        try:
            spec = job_schema.load(item if isinstance(item, dict) else {})
        except ValidationError as exc:
            field_name, messages = next(iter(exc.messages.items()))
            raise ConfigError(f"HEARTBEATS {name!r}, field {field_name!r}: {problem_text(messages)}") from None
        if spec["name"] in jobs:
            raise ConfigError(f"HEARTBEATS: the name {spec['name']!r} is used more than once")
        spec["routing_key"] = fixed_routing_key(spec, environ, f"HEARTBEATS {spec['name']!r}")
        spec.pop("routing_key_env", None)
        jobs[spec["name"]] = Job(**spec)
    return jobs


def declared(config) -> bool:
    """Tell whether the configuration declares any heartbeat (a route's option, or HEARTBEATS)."""
    return bool(config.get("HEARTBEATS") or watched_routes(config))


def watched_routes(config) -> set[str]:
    """The names of the routes in config whose alerts are heartbeats."""
    routes = [*(config.get("ROUTES") or []), config.get("DEFAULT_ROUTE") or {}]
    return {route.get("name") for route in routes if isinstance(route, dict) and route.get("heartbeat")}


def heartbeat_key(kind: str, name: str, identity: str = "") -> str:
    """The store's key of a heartbeat: stable for its kind, name and sender or label set."""
    return hashlib.sha256(json.dumps([kind, name, identity], ensure_ascii=False).encode()).hexdigest()


def watchdog_identity(alert, option: Watchdog) -> tuple[str, str]:
    """What tells a route's heartbeats apart (its label values, or its sender's externalURL) and how to say it."""
    if option.per:
        labels = ",".join(f"{name}={alert.labels.get(name, '')}" for name in option.per)
        return labels, labels
    if alert.external_url:
        return alert.external_url, f"{client_name(alert.source)} at {alert.external_url}"
    return alert.source, f"the {alert.source} webhook"


def _fixed(kind: str, name: str, routing_key: str, severity: str, route=None, subject=None, within=None) -> dict:
    """The columns of a heartbeat that its configuration decides, refreshed on every arrival."""
    return {"kind": kind, "name": name, "route": route, "subject": subject, "routing_key": routing_key,
            "severity": severity, "within_seconds": within}


def _insert_new(conn, key: str, fixed: dict, now: datetime, state: str, next_expected=None) -> None:
    """Start watching a heartbeat unless the store has it."""
    outbox.backend(conn).insert_if_absent(conn, Heartbeat.__table__, {
        "key": key, **fixed, "state": state, "watched_since": now, "changed_at": now, "next_expected": next_expected,
        "dedup_key": f"heartbeat-{key}"})


def _locked(conn, key: str):
    """A heartbeat's row, locked until the transaction ends (SQLite: its write transaction locks the file)."""
    return conn.execute(select(Heartbeat).where(Heartbeat.key == key).with_for_update()).one()


def record_beats(engine, items, routing, now: datetime, events_url: str) -> None:
    """Record each firing alert of a heartbeat route as its sender's (or label set's) heartbeat, and resolve the
    incident of one that was down; resolved alerts say nothing."""
    beats = {}
    for item in items:
        option = routing.heartbeat_of(item.route)
        if option is None or not item.alert.firing:
            continue
        identity, subject = watchdog_identity(item.alert, option)
        key = heartbeat_key(WATCHDOG, item.route, identity)
        beats[key] = _fixed(WATCHDOG, f"{item.route} {identity}", item.event["routing_key"], option.severity,
                            route=item.route, subject=subject, within=option.within)
    if not beats:
        return
    with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
        rows = []
        for key in sorted(beats):  # one order, so two writers never wait on each other's rows
            _insert_new(conn, key, beats[key], now, UP, now + timedelta(seconds=beats[key]["within_seconds"]))
            rows += _arrive(conn, key, beats[key], now, None, events_url)
        outbox.record_many(conn, rows)


def _arrive(conn, key: str, fixed: dict, now: datetime, message: str | None, events_url: str,
            next_expected: datetime | None = None) -> list[dict]:
    """Bring a heartbeat up on an arrival; return the resolve of its incident when it was down."""
    row = _locked(conn, key)
    if next_expected is None:
        next_expected = now + timedelta(seconds=fixed["within_seconds"])
    values = {**fixed, "last_seen": now, "state": UP, "next_expected": next_expected}
    if message is not None:
        values["last_message"] = message
    if row.state != UP:
        values["changed_at"] = now
    conn.execute(update(Heartbeat).where(Heartbeat.key == key).values(**values))
    if row.state != DOWN:
        return []
    log.info("heartbeat %s is back", row.name, extra={"heartbeat": row.name})
    return [_resolve(row, events_url)]


def check_in(engine, job: Job, signal: str, message: str | None, now: datetime, events_url: str):
    """Record a job's check-in (success, start or fail, its body as the last message); a success resolves its
    incident, a failure triggers one at once. Return the heartbeat as stored."""
    key = heartbeat_key(JOB, job.name)
    fixed = _fixed(JOB, job.name, job.routing_key, job.severity)
    with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
        _insert_new(conn, key, fixed, now, STARTING, job.expected_after(now))
        rows = []
        if signal == SUCCESS:
            rows = _arrive(conn, key, fixed, now, message, events_url, job.expected_after(now))
        elif signal == START:
            conn.execute(update(Heartbeat).where(Heartbeat.key == key).values(
                last_start=now, **({"last_message": message} if message is not None else {})))
        else:
            rows = _fail(conn, key, fixed, job, message, now, events_url)
        outbox.record_many(conn, rows)
        return _locked(conn, key)


def _fail(conn, key, fixed, job: Job, message: str | None, now: datetime, events_url: str) -> list[dict]:
    """Take a job down on its own report of a failure; trigger its incident unless it is open already."""
    row = _locked(conn, key)
    conn.execute(update(Heartbeat).where(Heartbeat.key == key).values(
        **fixed, last_seen=now, last_message=message, state=DOWN, next_expected=job.expected_after(now),
        **({"changed_at": now} if row.state != DOWN else {})))
    if row.state == DOWN:
        return []
    reason = (message or "").strip().splitlines()[0] if (message or "").strip() else "no message"
    log.warning("heartbeat %s reported a failure", row.name, extra={"heartbeat": row.name})
    return [_trigger(_locked(conn, key), job.summary or f"Job {job.name} reported a failure: {reason}", now, events_url,
                     last_message=message)]


def evaluate(engine, jobs: dict[str, Job], routes: set[str], now: datetime, events_url: str,
             pause_seconds: float, forget_after: timedelta | None) -> int:
    """Judge every heartbeat at `now`: trigger the incident of each silent past its window, forget those gone;
    after a pause in evaluation (the relay was stopped), give every one a full window first. Return how many
    events were stored."""
    with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
        for job in jobs.values():
            key, fixed = heartbeat_key(JOB, job.name), _fixed(JOB, job.name, job.routing_key, job.severity)
            _insert_new(conn, key, fixed, now, STARTING, job.expected_after(now))
            # An open incident keeps the key it was opened with: its resolve must go there.
            conn.execute(update(Heartbeat).where(Heartbeat.key == key, Heartbeat.state != DOWN).values(**fixed))
        found = conn.execute(select(Heartbeat).order_by(Heartbeat.key).with_for_update()).all()
        last_check = max((row.checked_at for row in found if row.checked_at), default=None)
        # None: every heartbeat arrived since the last evaluation (or there was none), so each was just watched.
        paused = last_check is not None and (now - last_check).total_seconds() > pause_seconds
        if paused:
            log.info("heartbeats: not evaluated since %s (the relay was stopped); each gets one full window before "
                     "it is judged", last_check.isoformat())
        events = []
        for row in found:
            job = jobs.get(row.name) if row.kind == JOB else None
            if _gone(row, job, routes, now, forget_after):
                events += _forget(conn, row, events_url)
                continue
            events += _judge(conn, row, job, now, paused, events_url)
        conn.execute(update(Heartbeat).values(checked_at=now))
        outbox.record_many(conn, events)
    return len(events)


def _gone(row, job: Job | None, routes: set[str], now: datetime, forget_after: timedelta | None) -> bool:
    """Tell whether a heartbeat is no longer watched: its job or route is no longer configured, or a watchdog
    was not seen for forget_after."""
    if row.kind == JOB:
        return job is None
    if row.route not in routes:
        return True
    return forget_after is not None and now - (row.last_seen or row.watched_since) > forget_after


def _forget(conn, row, events_url: str) -> list[dict]:
    """Stop watching a heartbeat; resolve its incident, which nothing else would close."""
    conn.execute(delete(Heartbeat).where(Heartbeat.key == row.key))
    log.info("heartbeat %s forgotten: last seen %s, no longer configured or silent too long", row.name,
             row.last_seen.isoformat() if row.last_seen else "never", extra={"heartbeat": row.name})
    return [_resolve(row, events_url)] if row.state == DOWN else []


def _judge(conn, row, job: Job | None, now: datetime, paused: bool, events_url: str) -> list[dict]:
    """Move one heartbeat on by the time: late, then down (triggered) once past its window; never back up."""
    watched_since, state = row.watched_since, row.state
    if paused and state != DOWN:
        watched_since, state = now, STARTING
    since = max(row.last_seen or watched_since, watched_since)
    if job is None:
        expected = deadline = since + timedelta(seconds=row.within_seconds)
    else:
        expected = job.expected_after(since)
        deadline = expected + timedelta(seconds=job.grace)
    if state != DOWN and now > deadline:
        state = DOWN
    elif state in (STARTING, UP) and now > expected:
        state = LATE
    conn.execute(update(Heartbeat).where(Heartbeat.key == row.key).values(
        watched_since=watched_since, state=state, next_expected=expected,
        **({"changed_at": now} if state != row.state else {})))
    if state != DOWN or row.state == DOWN:
        return []
    log.warning("heartbeat %s is down: nothing since %s", row.name, since.isoformat(), extra={"heartbeat": row.name})
    return [_trigger(row, _silence_summary(row, job, since, expected), now, events_url, expected=expected)]


def _silence_summary(row, job: Job | None, since: datetime, expected: datetime) -> str:
    """Say which heartbeat is missing, for how long, and when it was last seen."""
    last = f"last seen {_moment(row.last_seen)}" if row.last_seen else f"not seen since watched from {_moment(since)}"
    if job is None:
        return f"No heartbeat from {row.subject} for {_duration(row.within_seconds)}; {last}"
    return job.summary or f"Job {job.name} has not checked in: expected by {_moment(expected)}; {last}"


def _moment(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    """Seconds as people wrote them: 30s, 5m, 2h."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _trigger(row, summary: str, now: datetime, events_url: str, **details) -> dict:
    """The outbox row of a heartbeat's trigger."""
    event = load_event({
        "routing_key": row.routing_key, "event_action": "trigger", "dedup_key": row.dedup_key,
        "payload": {"summary": truncate(summary, SUMMARY_MAX), "source": "relay", "severity": row.severity,
                    "timestamp": now.isoformat(), "custom_details": {
                        "heartbeat": row.name, "kind": row.kind, "subject": row.subject,
                        "last_seen": row.last_seen.isoformat() if row.last_seen else None,
                        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in details.items()}}},
    })
    return outbox.row_values(event, source=SOURCE, route=row.route or row.name[:128], events_url=events_url)


def _resolve(row, events_url: str) -> dict:
    """The outbox row of a heartbeat's resolve."""
    event = load_event({"routing_key": row.routing_key, "event_action": "resolve", "dedup_key": row.dedup_key})
    return outbox.row_values(event, source=SOURCE, route=row.route or row.name[:128], events_url=events_url,
                             summary=truncate(f"Heartbeat {row.name}", SUMMARY_MAX))


def overview(conn) -> list[dict]:
    """Every heartbeat's state for people and metrics, routing key masked."""
    found = conn.execute(select(Heartbeat).order_by(Heartbeat.kind, Heartbeat.name)).all()
    return [describe(row) for row in found]


def describe(row) -> dict:
    """One heartbeat for people: routing key masked."""
    return {"name": row.name, "kind": row.kind, "route": row.route, "subject": row.subject, "state": row.state,
            "up": row.state != DOWN, "last_seen": row.last_seen, "last_start": row.last_start,
            "next_expected": row.next_expected, "watched_since": row.watched_since, "changed_at": row.changed_at,
            "last_message": row.last_message, "dedup_key": row.dedup_key, "routing_key": mask(row.routing_key)}


def duty(config) -> Duty | None:
    """The evaluation duty, while a route or HEARTBEATS declares heartbeats (None otherwise)."""
    jobs, routes = load_jobs(config.get("HEARTBEATS")), watched_routes(config)
    if not jobs and not routes:
        return None
    every = config["RELAY_HEARTBEAT_CHECK_SECONDS"]
    events_url, forget_after = config["PAGERDUTY_EVENTS_URL"], config["RELAY_HEARTBEAT_FORGET_AFTER"]

    def run(engine, now, wake):
        if evaluate(engine, jobs, routes, now, events_url, pause_seconds(every), forget_after):
            wake()

    return Duty(DUTY, every, run)


def pause_seconds(every: float) -> float:
    """How long without an evaluation means the relay was not watching: longer than a lease handed over after its
    holder died (its lease, then a turn) takes."""
    return Duty(DUTY, every, None).lease_seconds + 2 * every
