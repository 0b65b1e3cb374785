"""Replay: failed or dead rows put back in the outbox, unless a later row of their alert supersedes them."""
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from relay.store import states
from relay.store.models import IncidentLog

_LATER = aliased(IncidentLog, name="later")


def _newer_of_its_alert():
    """A later row of the same alert (routing key and dedup key) the relay has heard, sent or superseded (but not a
    repeat collapsed into this very row): the row is no longer its alert's latest word."""
    return and_(_LATER.routing_key == IncidentLog.routing_key, _LATER.dedup_key == IncidentLog.dedup_key,
                _LATER.id > IncidentLog.id, _LATER.status.in_(states.HEARD),
                or_(_LATER.superseded_by.is_(None), _LATER.superseded_by != IncidentLog.id))


def requeue(conn, now: datetime, *conditions, statuses=states.REPLAYABLE) -> list[int]:
    """Put failed or dead rows matching the conditions back in the outbox, due now, unless a later row of their
    alert has superseded them (sending them would undo it); return their ids.

    One UPDATE, no read before it: safe against concurrent writers on SQLite too.
    """
    result = conn.execute(update(IncidentLog).where(
        IncidentLog.status.in_(statuses), *conditions, ~exists().where(_newer_of_its_alert())).values(
        status=states.PENDING, next_attempt_at=now, claimed_by=None, claimed_until=None, updated_at=now,
    ).returning(IncidentLog.id))
    return sorted(result.scalars().all())


@dataclass(frozen=True)
class Superseded:
    """A failed or dead row left alone by requeue, and the newest row of its alert that supersedes it."""

    id: int
    event_action: str
    newer_id: int
    newer_action: str
    newer_status: str

    @property
    def reason(self) -> str:
        """Say why the row was not sent again, and what would restore its alert's state instead."""
        text = (f"row {self.id} ({self.event_action}) was not sent again: row {self.newer_id} "
                f"({self.newer_action}, {self.newer_status}) is newer for the same alert, and sending the older "
                "event would undo it")
        if self.newer_status in states.REPLAYABLE:
            text += f"; replay row {self.newer_id} to restore the alert's latest state"
        return text


def superseded(conn, *conditions, statuses=states.REPLAYABLE) -> list[Superseded]:
    """The failed or dead rows matching the conditions that a later row of their alert supersedes, by id."""
    log = IncidentLog
    newest = (select(log.id, log.event_action, func.max(_LATER.id).label("newer_id"))
              .join(_LATER, _newer_of_its_alert()).where(log.status.in_(statuses), *conditions)
              .group_by(log.id, log.event_action).subquery())
    rows = conn.execute(select(newest, _LATER.event_action.label("newer_action"), _LATER.status.label("newer_status"))
                        .join(_LATER, _LATER.id == newest.c.newer_id).order_by(newest.c.id)).all()
    return [Superseded(**row._mapping) for row in rows]

