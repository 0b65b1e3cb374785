"""Health endpoints for load balancers and orchestrators: /healthz (alive), /readyz (it can work now).

Under gunicorn /healthz also fails once this host's delivery process has not beaten for its stall threshold: the
web workers would go on accepting alerts that nothing sends, and only a restart of the whole relay can help then.
"""
import logging
import os
import time

from flask import Blueprint, current_app, jsonify
from sqlalchemy import select

from relay.delivery import worker
from relay.pagerduty.client import misdirected, safe_url
from relay.store import endpoints, failures
from relay.store.backlog import open_rows_by_answer, outbox_backlog
from relay.store.models import IncidentLog, db, utcnow

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)
_STARTED = time.monotonic()  # a delivery process not started yet is no fault during its first threshold


@bp.get("/healthz")
def healthz():
    """Answer 200 while the process serves requests and this host's delivery process (if any) beats; else 503."""
    heartbeat = current_app.config["RELAY_DELIVERY_HEARTBEAT_FILE"]
    if heartbeat and not current_app.config["RELAY_DELIVERY"]:
        state = _delivery_process_state(heartbeat)
        threshold = _stall_threshold()
        late = state["state"] == "stalled" or (state["state"] == "not started"
                                               and time.monotonic() - _STARTED >= threshold)
        if late:
            log.error("unhealthy: no delivery process has beaten for %.0f s", threshold)
            return jsonify({"status": "unhealthy", "reason": state["reason"]}), 503
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Answer 200 when the store answers, delivery runs here and the outbox keeps up; else 503 with the reasons."""
    checks, reasons = {}, []
    _check_store(checks, reasons)
    _check_worker(checks, reasons)
    if checks["store"]["ok"]:
        _check_outbox(checks, reasons)
    if checks["store"]["ok"]:
        _check_pagerduty_url(checks, reasons)
    if checks["store"]["ok"]:
        _check_pagerduty_reachable(checks, reasons)
    if reasons:
        log.info("not ready: %s", "; ".join(reasons))
        return jsonify({"status": "not ready", "reasons": reasons, "checks": checks}), 503
    return jsonify({"status": "ready", "checks": checks})


def _check_store(checks, reasons):
    """Does the store answer, with the relay's tables in it?"""
    try:
        db.session.execute(select(IncidentLog.id).limit(1))
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - a store that is down is a reason, never a 500
        _store_failed(exc, checks, reasons)
        return
    checks["store"] = {"ok": True}


def _store_failed(exc, checks, reasons):
    """Name why the store failed: a short reason and its address, never a user or password."""
    db.session.rollback()
    problem = failures.describe(exc, current_app.config["SQLALCHEMY_DATABASE_URI"])
    if problem is None:
        log.exception("the store check failed")
        problem = failures.StoreProblem("store check failed; see the relay's log")
    checks["store"] = {"ok": False, "error": problem.reason, "address": problem.address}
    reasons.append(str(problem))


def _check_worker(checks, reasons):
    if not current_app.config["RELAY_DELIVERY"]:
        if current_app.config["RELAY_DELIVERY_HEARTBEAT_FILE"]:
            _check_delivery_process(checks, reasons)
        else:
            checks["delivery_worker"] = {"ok": True,
                                         "skipped": "RELAY_DELIVERY=0: delivery runs in another process"}
        return
    running = worker.current()
    if running is None:
        checks["delivery_worker"] = {"ok": False, "state": "not running"}
        reasons.append("delivery worker not running in this process")
    elif not running.alive:
        checks["delivery_worker"] = {"ok": False, "state": "stalled"}
        reasons.append("delivery worker stalled (its loop has not run recently)")
    else:
        checks["delivery_worker"] = {"ok": True, "state": "running"}


def _check_delivery_process(checks, reasons):
    """Under gunicorn: is this host's delivery process beating (it touches the heartbeat file every second)?"""
    state = _delivery_process_state(current_app.config["RELAY_DELIVERY_HEARTBEAT_FILE"])
    reason = state.pop("reason", None)
    checks["delivery_worker"] = state
    if reason:
        reasons.append(reason)


def _delivery_process_state(path) -> dict:
    """The delivery process's state from its heartbeat file's age, with a reason when it is not running."""
    try:
        beaten = os.path.getmtime(path)
    except OSError:
        return {"ok": False, "state": "not started", "reason": "the delivery process has not started yet"}
    age = round(max(0.0, time.time() - beaten), 1)
    if age >= _stall_threshold():
        return {"ok": False, "state": "stalled", "seconds_since_heartbeat": age,
                "reason": f"the delivery process has not beaten for {age:.0f}s"}
    return {"ok": True, "state": "running in its own process", "seconds_since_heartbeat": age}


def _stall_threshold() -> float:
    return worker.stalled_after(current_app.config["RELAY_DELIVERY_POLL_SECONDS"])


def _check_outbox(checks, reasons):
    max_backlog = current_app.config["RELAY_READY_MAX_BACKLOG"]
    max_age = current_app.config["RELAY_READY_MAX_PENDING_AGE_SECONDS"]
    try:
        counts, oldest = outbox_backlog(db.session)
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - as above: the store failed between two queries
        _store_failed(exc, checks, reasons)
        return
    backlog = sum(counts.values())
    age = round(max(0.0, (utcnow() - oldest).total_seconds()), 3) if oldest else 0.0
    checks["backlog"] = {"ok": not max_backlog or backlog < max_backlog, "open": backlog, "max": max_backlog}
    checks["oldest_pending_age"] = {"ok": not max_age or age < max_age, "seconds": age, "max": max_age}
    if not checks["backlog"]["ok"]:
        reasons.append(f"outbox backlog {backlog} is not under RELAY_READY_MAX_BACKLOG={max_backlog}")
    if not checks["oldest_pending_age"]["ok"]:
        reasons.append(f"oldest pending row is {age:.0f}s old, not under "
                       f"RELAY_READY_MAX_PENDING_AGE_SECONDS={max_age:g}")


def _check_pagerduty_url(checks, reasons):
    """Are open rows waiting because their last answer came from something other than the Events API?"""
    try:
        by_answer = open_rows_by_answer(db.session)
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - as above
        _store_failed(exc, checks, reasons)
        return
    wrong = {str(status): count for status, count in sorted(by_answer.items()) if misdirected(status)}
    url = safe_url(current_app.config["PAGERDUTY_EVENTS_URL"])
    checks["pagerduty_url"] = {"ok": not wrong, "url": url, "open_rows_by_http_status": wrong}
    if wrong:
        answers = ", ".join(f"{count} after HTTP {status}" for status, count in wrong.items())
        reasons.append(f"open rows wait on answers no Events API gives ({answers}): PAGERDUTY_EVENTS_URL {url} "
                       f"is wrong or a proxy is in the way")


def _check_pagerduty_reachable(checks, reasons):
    """Which PagerDuty endpoints are down and probed, and how many events wait on each. Shown, never a reason to
    be taken out of the load balancer: the relay keeps storing webhooks for when PagerDuty is back."""
    try:
        known = endpoints.overview(db.session, current_app.config["PAGERDUTY_EVENTS_URL"])
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - as above
        _store_failed(exc, checks, reasons)
        return
    now = utcnow()
    checks["pagerduty"] = {"ok": True, "endpoints": [{
        "url": safe_url(endpoint.events_url), "state": "up" if endpoint.up else "down, probing",
        "down_since": endpoint.down_since.isoformat() if endpoint.down_since else None,
        "seconds_since_last_answer": (round((now - endpoint.last_success_at).total_seconds(), 1)
                                      if endpoint.last_success_at else None),
        "waiting": endpoint.waiting} for endpoint in known]}
