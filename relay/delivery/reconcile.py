"""The reconciler: a periodic duty that asks each open alert's source what became of it, and settles what the source
never will (alertmanager #226: a silenced, inhibited or muted alert never sends its resolve; a restarted Alertmanager
forgets its alerts; a resolve is lost upstream).

Each check: the alerts the relay triggered and has not resolved (relay/store/watches.py), grouped by the source that
can be asked (Alertmanager's `GET /api/v2/alerts` at its externalURL or RELAY_ALERTMANAGER_URL; Grafana's copy of that
API), each matched by fingerprint (by labels as a fallback) and found firing, muted (silenced or inhibited) or gone.
The alert's route says what to do (on_muted, on_gone: resolve, acknowledge or keep); a muted alert resolved or
acknowledged that fires again unmuted is triggered again with its dedup key. The events go through the outbox like
any other, with their cause. Safety: a source that cannot be read resolves nothing; "gone" needs two checks in a
row; one check resolves or acknowledges at most RELAY_RECONCILE_MAX_RESOLVES alerts.
"""
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app

from relay import metrics
from relay.delivery.alert_apis import AlertsAPI, Endpoint, SourceAlert, SourceUnavailable, describe_problem
from relay.delivery.duties import Duty
from relay.intake.routing import DEDUP_GROUP, RECONCILE_ACKNOWLEDGE, RECONCILE_KEEP, RECONCILE_RESOLVE
from relay.masking import mask
from relay.pagerduty.event import load_event
from relay.store import outbox, states, watches
from relay.store.latest_states import latest_states

log = logging.getLogger(__name__)

NAME = "reconcile"  # the duty's lease
SOURCES = ("alertmanager", "grafana")  # the sources with an alerts API to ask
GONE_AFTER_CHECKS = 2  # a restarting Alertmanager has no alerts for a moment: absent once proves nothing
SCAN_OVERLAP = timedelta(seconds=60)  # rows committed late (a slow transaction) are still scanned
LATEST_BATCH = 1000  # alerts per latest-state query (PostgreSQL takes at most 65,535 parameters a statement)

# What the source says of an alert.
FIRING = "firing"
MUTED = "muted"
ABSENT = "absent"

# What the relay last told PagerDuty of an alert it watches.
OPEN = "open"  # triggered
ACKNOWLEDGED = "acknowledged"  # acknowledged by the reconciler (muted, or gone under on_gone=acknowledge)
MUTED_RESOLVED = "resolved while muted"  # resolved by the reconciler because muted: triggered again if unmuted

CAUSE = "reconciled: "
MUTED_CAUSES = (CAUSE + "silenced", CAUSE + "inhibited")
UNMUTED_CAUSE = CAUSE + "unmuted and still firing"


@dataclass(frozen=True)
class Decision:
    """What one check does for one alert: an event to send (or None), its gone count, whether to stop watching."""

    action: str | None
    misses: int
    forget: bool = False
    note: str = ""


def decide(view: str, seen: str, misses: int, on_muted: str, on_gone: str) -> Decision:
    """Decide, from what the relay last said (view), what the source says (seen) and the route's policy."""
    if seen == FIRING:
        if view == OPEN:
            return Decision(None, 0, note="still firing")
        return Decision("trigger", 0, note="unmuted and still firing")
    if seen == MUTED:
        if view == OPEN and on_muted != RECONCILE_KEEP:
            return Decision(on_muted, 0)
        if view == ACKNOWLEDGED and on_muted == RECONCILE_RESOLVE:
            return Decision(RECONCILE_RESOLVE, 0)
        return Decision(None, 0, note=f"muted; on_muted is {on_muted}" if view == OPEN else "still muted")
    misses += 1
    if misses < GONE_AFTER_CHECKS:
        return Decision(None, misses, note=f"absent in {misses} of the {GONE_AFTER_CHECKS} checks that make it gone")
    if view == MUTED_RESOLVED:
        return Decision(None, misses, forget=True, note="gone, and already resolved")
    if on_gone == RECONCILE_RESOLVE:
        return Decision(RECONCILE_RESOLVE, misses, forget=True)
    if view == OPEN and on_gone == RECONCILE_ACKNOWLEDGE:
        return Decision(RECONCILE_ACKNOWLEDGE, misses)
    if view == ACKNOWLEDGED:
        return Decision(None, misses, forget=True, note="gone, and already acknowledged")
    return Decision(None, misses, note=f"gone; on_gone is {on_gone}")


def view_of(latest) -> str | None:
    """What the relay last told PagerDuty of a watched alert, by its newest row; None when nothing is left to do
    (resolved, never delivered, or settled by hand)."""
    if latest is None:
        return None
    if latest.event_action == "trigger":
        return OPEN if latest.status not in states.NOT_DELIVERED else None
    cause = latest.cause or ""
    if latest.event_action == "acknowledge" and cause.startswith(CAUSE):
        return ACKNOWLEDGED
    if latest.event_action == "resolve" and cause.startswith(MUTED_CAUSES):
        return MUTED_RESOLVED
    return None


@dataclass
class Finding:
    """One watched alert in one check: where it is asked, what was found and decided, and the event's cause."""

    watch: object
    view: str
    endpoint: Endpoint | None = None
    latest_id: int | None = None
    seen: str | None = None
    decision: Decision | None = None
    cause: str | None = None
    capped: bool = False
    problem: str | None = None  # why the alert was not asked about this check

    @property
    def key(self) -> tuple[str, str]:
        """The watch's key: (routing key hash, dedup key)."""
        return self.watch.routing_key_hash, self.watch.dedup_key

    def line(self) -> dict:
        """What the check found and would do, as one JSON-ready record (routing key masked)."""
        decision, watch = self.decision, self.watch
        action = decision.action if decision and not self.capped else None
        note = "over RELAY_RECONCILE_MAX_RESOLVES this check" if self.capped else decision.note if decision \
            else self.problem
        return {"dedup_key": watch.dedup_key, "route": watch.route, "routing_key": mask(watch.routing_key),
                "source": self.endpoint.shown if self.endpoint else None, "relay": self.view, "found": self.seen,
                "action": action, "cause": self.cause if action else None, "note": note}


@dataclass
class Report:
    """What one check did: each alert's finding, and the sources it could not read."""

    findings: list[Finding] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # shown URL → problem
    stored: list[int] = field(default_factory=list)


class Reconciler:
    """The reconciler of one delivery process (or one `relay reconcile --dry-run`); remembers how far it scanned."""

    def __init__(self, config, routing=None):
        self.config, self._routing = config, routing
        self.scanned_until = None  # None: scan every row once, on this process's first check
        self.unreadable: dict[str, str] = {}  # endpoints that could not be read, with why: said once, not every check

    @property
    def routing(self):
        """The routes (the app's, unless given): each alert's route gives its policy."""
        return self._routing or current_app.extensions["relay.intake.routing"]

    def run(self, engine, now, wake) -> Report:
        """The duty's turn: check once, store the events decided, and wake delivery when there are any."""
        report = self.check(engine, now)
        if report.stored:
            wake()
        return report

    def check(self, engine, now, dry_run: bool = False) -> Report:
        """Ask the sources of every watched alert what became of it, decide by each route's policy, and (unless
        dry_run) store the events and the gone counts."""
        report = Report()
        since = None if self.scanned_until is None else self.scanned_until - SCAN_OVERLAP
        with _transaction(engine, dry_run) as conn:
            watches.scan(conn, SOURCES, since)
            watches.drop_orphans(conn)
            findings, settled = self._open(conn)
            if not dry_run:
                watches.forget(conn, settled)
        if not dry_run:
            self.scanned_until = now
        found = self._ask(findings, report)
        with _transaction(engine, dry_run) as conn:
            self._settle(conn, findings, found, report, now, dry_run)
        return report

    def _open(self, conn):
        """Each watched alert still open (or muted by the reconciler), and the keys of those settled."""
        rows = watches.watched(conn)
        latest = _latest_states(conn, {(row.routing_key, row.dedup_key) for row in rows})
        findings, settled = [], []
        for row in rows:
            newest = latest.get((row.routing_key, row.dedup_key))
            view = view_of(newest)
            route = self.routing.named(row.route)
            if route is not None and route.dedup == DEDUP_GROUP:
                view = None  # one PagerDuty alert for a whole group: one alert's fate is not the group's
            if view is None:
                settled.append((row.routing_key_hash, row.dedup_key))
                continue
            findings.append(Finding(row, view, self._endpoint(row), latest_id=newest.id))
        return findings, settled

    def _endpoint(self, row) -> Endpoint | None:
        """Where the alert's source answers: RELAY_<SOURCE>_URL, else the externalURL it sent."""
        settings = self.config["RELAY_ALERT_APIS"].get(row.source) or {}
        url = settings.get("url") or (row.alert or {}).get("external_url")
        if not url:
            return None
        return Endpoint(row.source, url, settings.get("bearer_token", ""), settings.get("basic_user", ""),
                        settings.get("basic_password", ""))

    def _ask(self, findings: list[Finding], report: Report) -> dict[Endpoint, tuple["Listed", dict]]:
        """Read each endpoint's alerts once, with the silences that mute the watched ones (before any write lock is
        taken); an endpoint that cannot be read is counted, logged and left out."""
        answers = {}
        for endpoint in {finding.endpoint for finding in findings if finding.endpoint is not None}:
            api = AlertsAPI(endpoint, self.config["RELAY_RECONCILE_TIMEOUT_SECONDS"])
            try:
                alerts = Listed(api.alerts())
                silence_ids = {silence_id for finding in findings if finding.endpoint == endpoint
                               and (match := alerts.find(finding.watch.alert or {})) is not None
                               for silence_id in match.silenced_by}
                answers[endpoint] = (alerts, {silence_id: api.silence(silence_id) for silence_id in silence_ids})
                if self.unreadable.pop(endpoint.shown, None) is not None:
                    log.info("reconciler: the alerts of %s can be read again", endpoint.source,
                             extra={"source": endpoint.source})
            except SourceUnavailable as exc:
                problem = describe_problem(endpoint, exc)
                report.unavailable[endpoint.shown] = problem
                metrics.reconcile_error(endpoint.source)
                waiting = sum(finding.endpoint == endpoint for finding in findings)
                said_before = self.unreadable.get(endpoint.shown) == problem
                self.unreadable[endpoint.shown] = problem
                (log.debug if said_before else log.warning)(
                    "reconciler: cannot read the alerts of %s (%s); nothing resolved for its %d open alert(s)",
                    endpoint.source, problem, waiting, extra={"source": endpoint.source})
            finally:
                api.close()
        return answers

    def _settle(self, conn, findings, answers, report: Report, now, dry_run: bool) -> None:
        """Decide for each alert whose source answered, against its newest row read again under its lock."""
        asked = [finding for finding in findings if finding.endpoint in answers]
        for finding in findings:
            if finding.endpoint is None:
                finding.problem = "no URL to ask: the alert has no externalURL and RELAY_<SOURCE>_URL is not set"
            elif finding.endpoint not in answers:
                finding.problem = f"not asked: {report.unavailable.get(finding.endpoint.shown)}; nothing resolved"
            if finding.problem:
                report.findings.append(finding)
        latest = _latest_states(conn, {(f.watch.routing_key, f.watch.dedup_key) for f in asked})
        budget = self.config["RELAY_RECONCILE_MAX_RESOLVES"]
        rows, misses, forget = [], {}, []
        for finding in asked:
            newest = latest.get((finding.watch.routing_key, finding.watch.dedup_key))
            if newest is None or newest.id != finding.latest_id:
                continue  # a webhook wrote meanwhile: the next check sees it
            alerts, silences = answers[finding.endpoint]
            match = alerts.find(finding.watch.alert or {})
            finding.seen = ABSENT if match is None else MUTED if match.muted else FIRING
            route = self.routing.named(finding.watch.route)
            on_muted, on_gone = (route.on_muted, route.on_gone) if route else (RECONCILE_KEEP, RECONCILE_RESOLVE)
            finding.decision = decision = decide(finding.view, finding.seen, finding.watch.misses, on_muted, on_gone)
            report.findings.append(finding)
            if decision.action in (RECONCILE_RESOLVE, RECONCILE_ACKNOWLEDGE):
                if budget <= 0:
                    finding.capped = True
                    continue
                budget -= 1
            if decision.action:
                finding.cause = cause(finding, match, alerts, silences)
                rows.append(self._row(finding))
            if decision.forget:
                forget.append(finding.key)
            elif decision.misses != finding.watch.misses or decision.action:
                misses[finding.key] = decision.misses
        capped = sum(finding.capped for finding in report.findings)
        if capped:
            log.warning("reconciler: %d alert(s) left open this check: over RELAY_RECONCILE_MAX_RESOLVES (%d)", capped,
                        self.config["RELAY_RECONCILE_MAX_RESOLVES"])
        if dry_run:
            return
        report.stored = outbox.record_many(conn, rows)
        watches.set_misses(conn, misses, now)
        watches.forget(conn, forget)
        for finding in report.findings:
            if finding.cause:
                log.info("reconciler: %s %s (route %s): %s", finding.decision.action, finding.watch.dedup_key,
                         finding.watch.route, finding.cause, extra={"dedup_key": finding.watch.dedup_key})
                metrics.reconciled(finding.decision.action)

    def _row(self, finding: Finding) -> dict:
        """The outbox row of the event decided: the alert's trigger again, or an acknowledge or resolve."""
        watch = finding.watch
        action = finding.decision.action
        if action == "trigger":
            event = {**watch.event, "routing_key": watch.routing_key}
        else:
            event = load_event({"routing_key": watch.routing_key, "event_action": action,
                                "dedup_key": watch.dedup_key})
        return outbox.row_values(event, source=watch.source, route=watch.route, alert=watch.alert,
                                 events_url=self.config["PAGERDUTY_EVENTS_URL"], cause=finding.cause)


def _latest_states(conn, pairs: set) -> dict:
    """latest_states in batches: a first check may watch more alerts than one statement takes parameters."""
    ordered, latest = sorted(pairs), {}
    for start in range(0, len(ordered), LATEST_BATCH):
        latest.update(latest_states(conn, set(ordered[start:start + LATEST_BATCH])))
    return latest


class Listed:
    """A source's alerts, looked up by fingerprint, else by labels (Grafana's private __ labels left out: its webhook
    drops them)."""

    def __init__(self, alerts: list[SourceAlert]):
        self.by_fingerprint = {alert.fingerprint: alert for alert in alerts if alert.fingerprint}
        self.by_labels = {_public(alert.labels): alert for alert in alerts}
        self.alertnames = {alert.fingerprint: alert.labels.get("alertname") for alert in alerts}

    def find(self, alert: dict) -> SourceAlert | None:
        """The source's alert that is this stored one, or None when the source does not have it."""
        found = self.by_fingerprint.get(alert.get("fingerprint") or "")
        if found is None and alert.get("labels"):
            found = self.by_labels.get(_public(alert["labels"]))
        return found


def _public(labels: dict) -> frozenset:
    return frozenset((name, value) for name, value in labels.items() if not name.startswith("__"))


def cause(finding: Finding, match: SourceAlert | None, alerts: Listed, silences: dict) -> str:
    """Say why the reconciler sends its event: the silences (by id, creator and comment) or inhibiting alerts."""
    if finding.decision.action == "trigger":
        return UNMUTED_CAUSE
    if finding.seen == ABSENT:
        return f"{CAUSE}gone from {finding.endpoint.shown}/alerts for {finding.decision.misses} checks"
    if match.silenced_by:
        return CAUSE + "silenced by " + "; ".join(_silence_text(sid, silences.get(sid)) for sid in match.silenced_by)
    names = alerts.alertnames
    return CAUSE + "inhibited by " + ", ".join(f"{fp} ({names[fp]})" if names.get(fp) else fp
                                               for fp in match.inhibited_by)


def _silence_text(silence_id: str, silence: dict | None) -> str:
    """A silence as `<id> (<creator>: <comment>)`; its id alone when it could not be read."""
    if not silence:
        return silence_id
    return f"{silence_id} ({silence.get('createdBy') or '?'}: {silence.get('comment') or ''})"


@contextmanager
def _transaction(engine, dry_run: bool):
    """A write transaction; for a dry run, one rolled back, so nothing it wrote stays."""
    if dry_run:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                yield conn
            finally:
                transaction.rollback()
        return
    with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
        yield conn


def duty(config):
    """The reconciler's duty, every RELAY_RECONCILE_INTERVAL_SECONDS (None when 0: off)."""
    every = config["RELAY_RECONCILE_INTERVAL_SECONDS"]
    if not every or every <= 0:
        return None
    return Duty(NAME, every, Reconciler(config).run)
