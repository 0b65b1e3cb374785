"""Collapsing what need not be sent, decided as a webhook's events are stored, inside their write transaction and
under their alerts' lock: only an alert's latest state matters while PagerDuty has not been told.

- A repeat of a trigger (the same content) while the alert's newest row is that trigger, still open or delivered
  within DUPLICATE_WINDOW, is kept superseded by it: an Alertmanager HA pair, or a repeat_interval re-send while
  the first is still waiting, is carried by the first copy.
- A repeat of a resolve likewise, and any resolve after a trigger and its resolve collapsed.
- A resolve whose alert's newest rows are triggers PagerDuty never received supersedes them: when PagerDuty has no
  incident open for the alert either, the resolve is superseded too, and nobody is paged for an alert that is
  already over (unless its route sets send_flapping); otherwise only the resolve is sent.

A row being sent, or one whose earlier send may have reached PagerDuty (a timeout, a dropped or refused
connection, a sender that died mid-request), counts as received: it is never un-sent, and it stops the collapse.
"""
from datetime import timedelta

from sqlalchemy import bindparam, exists, or_, select, update

from relay.store import models, states
from relay.store.models import DeliveryAttempt, IncidentLog

TRIGGER, RESOLVE = "trigger", "resolve"
# Alertmanager's HA replicas each send a notification, the later ones a peer timeout (15 s by default) apart: a
# copy that arrives this soon after its twin was delivered is the same notification, not a repeat_interval re-send
# (which is sent again: PagerDuty reopens an incident someone resolved by hand while the alert still fires).
DUPLICATE_WINDOW = timedelta(seconds=60)
WALK_LIMIT = 100  # rows of one alert read back from its newest; past them the relay sends rather than guess

# An attempt after which PagerDuty may have the event: anything but an answer that refused it for now.
_MAYBE_RECEIVED = exists().where(DeliveryAttempt.log_id == IncidentLog.id, or_(
    DeliveryAttempt.outcome != states.RETRY, DeliveryAttempt.http_status.is_(None)))
# The alert's rows that set its state, newest first, locked against claims until the webhook commits (on
# PostgreSQL claimers skip locked rows; on SQLite the write lock already keeps them out).
_NEWEST_ROWS = (select(IncidentLog.id, IncidentLog.event_action, IncidentLog.status, IncidentLog.claimed_by,
                       _MAYBE_RECEIVED.label("maybe_received"))
                .where(IncidentLog.routing_key == bindparam("routing_key"),
                       IncidentLog.dedup_key == bindparam("dedup_key"), IncidentLog.status.in_(states.SETS_STATE))
                .order_by(IncidentLog.id.desc()).limit(WALK_LIMIT).with_for_update(of=IncidentLog))
_SUPERSEDE = (update(IncidentLog).where(IncidentLog.id.in_(bindparam("ids", expanding=True)),
                                        IncidentLog.status.in_(states.OPEN), IncidentLog.claimed_by.is_(None))
              .values(status=states.SUPERSEDED, superseded_by=bindparam("by"), error=bindparam("reason"),
                      updated_at=bindparam("now")))


def content(event: dict) -> tuple:
    """What a trigger tells PagerDuty (summary, severity, details, links, images), without what names the sender
    (client, client_url: the two replicas of an HA pair may differ there)."""
    return event.get("payload"), event.get("links"), event.get("images")


def decide(conn, row: dict, last, sends_flapping: bool) -> list[int]:
    """Mark a new pending row superseded when it need not be sent, given its alert's newest row (latest_states.py);
    return the ids of older rows it supersedes in turn, to be marked once it has an id (supersede_older)."""
    if last is None or last.id is None:  # none stored, or only an earlier event of this request
        return []
    carrier = _Carrier(last)
    action = row["event_action"]
    if action == TRIGGER and carrier.action == TRIGGER and carrier.carries(row) \
            and content(row["event"]) == content(last.event):
        _mark(row, carrier.id, f"superseded: a repeat of the trigger {carrier.state} in row {carrier.id}; not sent")
        return []
    if action != RESOLVE:
        return []
    if carrier.over:
        _mark(row, last.id, f"superseded: the alert's trigger and resolve (row {last.id}) were never sent; "
                            "nothing to resolve")
        return []
    if carrier.action == RESOLVE and carrier.carries(row):
        _mark(row, carrier.id, f"superseded: a repeat of the resolve {carrier.state} in row {carrier.id}; not sent")
        return []
    if sends_flapping or not (carrier.action == TRIGGER and carrier.open):
        return []
    return _resolve_unsent_triggers(conn, row)


class _Carrier:
    """What the alert's newest row stands for: itself, or the row a superseded repeat was collapsed into."""

    def __init__(self, last):
        repeat = last.status == states.SUPERSEDED and last.superseded_by and last.superseded_by < last.id \
            and last.carrier_action == last.event_action
        self.id = last.superseded_by if repeat else last.id
        self.action = last.event_action
        self.status = last.carrier_status if repeat else last.status
        self.created_at = models.as_utc(last.carrier_created_at if repeat else last.created_at)
        self.open = self.status in states.OPEN
        # A resolve superseded together with the trigger it resolves: the alert is over and was never paged.
        self.over = last.status == states.SUPERSEDED and not repeat and last.event_action == RESOLVE

    @property
    def state(self) -> str:
        return "waiting" if self.open else "delivered moments before"

    def carries(self, row: dict) -> bool:
        """Tell whether this row makes a same-content row redundant: it is still to be sent, or it was delivered
        within DUPLICATE_WINDOW of the row's arrival (an HA replica's copy)."""
        recent = row["created_at"] - self.created_at <= DUPLICATE_WINDOW
        return self.open or (self.status == states.DELIVERED and recent)


def _resolve_unsent_triggers(conn, row: dict) -> list[int]:
    """Supersede the alert's newest triggers that PagerDuty never received by this resolve, and the resolve too
    when PagerDuty has no incident open for the alert; return the triggers' ids."""
    rows = conn.execute(_NEWEST_ROWS, {"routing_key": row["routing_key"], "dedup_key": row["dedup_key"]}).all()
    unsent, before = [], None
    for older in rows:
        if older.event_action == TRIGGER and older.status in states.OPEN and older.claimed_by is None \
                and not older.maybe_received:
            unsent.append(older.id)
            continue
        before = older
        break
    else:
        if len(rows) == WALK_LIMIT:
            return []
    if not unsent:
        return []
    # PagerDuty has no incident open: the alert never reached it, or its last word there was a resolve.
    if before is None or (before.event_action == RESOLVE and before.status in (*states.OPEN, states.DELIVERED)):
        _mark(row, unsent[0], f"superseded: resolved before its trigger (row {unsent[0]}) was sent; neither is "
                              "sent (a route with send_flapping sends both)")
    return unsent


def _mark(row: dict, by: int, reason: str) -> None:
    row.update(status=states.SUPERSEDED, superseded_by=by, error=reason)


def supersede_older(conn, ids: list[int], superseded: list[list[int]], now) -> None:
    """Mark the older rows each new row supersedes, naming it; the webhook's transaction holds them locked."""
    for by, older in zip(ids, superseded):
        if older:
            conn.execute(_SUPERSEDE, {"ids": older, "by": by, "now": now,
                                      "reason": f"superseded by row {by}: resolved before it was sent; not sent"})
