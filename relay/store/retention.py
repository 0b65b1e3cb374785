"""Retention: deleting old incident_log rows (and their attempts) that need nothing more done."""
import logging
from datetime import datetime

from sqlalchemy import delete, select

from relay.store.models import DeliveryAttempt, IncidentLog
from relay.store.states import FINISHED  # never pending or retrying

log = logging.getLogger(__name__)

BATCH = 1000  # rows per transaction, so a big prune never holds the store for long


def prune(engine, before: datetime, statuses=FINISHED) -> int:
    """Delete finished rows created before the given moment, in batches; return how many went."""
    statuses = [s for s in statuses if s in FINISHED]
    total = 0
    while True:
        with engine.begin() as conn:
            ids = conn.execute(select(IncidentLog.id).where(
                IncidentLog.created_at < before, IncidentLog.status.in_(statuses)).limit(BATCH)).scalars().all()
            if not ids:
                return total
            conn.execute(delete(DeliveryAttempt).where(DeliveryAttempt.log_id.in_(ids)))
            conn.execute(delete(IncidentLog).where(IncidentLog.id.in_(ids)))
        total += len(ids)
