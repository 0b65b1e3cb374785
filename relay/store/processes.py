"""The delivery-process registry: a row per running delivery loop, beaten every few seconds, so any process (the
CLI, the job's answer) can tell whether something delivers now, where it runs and which endpoint it sends to."""
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from relay.store.models import DeliveryProcess


def beat(conn, process_id: str, host: str, pid: int, events_url: str, started_at: datetime, now: datetime,
         forget_before: datetime) -> None:
    """Record that the process delivers now; the first time (or after its row went), register it and drop the rows
    of processes that stopped beating before forget_before (killed ones never delete their own)."""
    if conn.execute(update(DeliveryProcess).where(DeliveryProcess.id == process_id).values(beat_at=now)).rowcount:
        return
    conn.execute(delete(DeliveryProcess).where(DeliveryProcess.beat_at < forget_before))
    conn.execute(insert(DeliveryProcess).values(id=process_id, host=host, pid=pid, events_url=events_url,
                                                started_at=started_at, beat_at=now))


def forget(conn, process_id: str) -> None:
    """Remove the process's row: it has stopped delivering."""
    conn.execute(delete(DeliveryProcess).where(DeliveryProcess.id == process_id))


_PROCESS = DeliveryProcess.__table__


def beating(conn, since: datetime) -> list:
    """The delivery processes that beat since the given moment (id, host, pid, events_url, started_at, beat_at),
    the latest beat first; conn is a connection or a session."""
    return conn.execute(select(_PROCESS).where(_PROCESS.c.beat_at >= since).order_by(_PROCESS.c.beat_at.desc())).all()
