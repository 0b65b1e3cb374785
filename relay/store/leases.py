"""Leases on periodic duties: each duty runs in one delivery process at a time across instances, the holder renewing
its lease on every run; once a holder stops renewing (stopped, killed, cut off), another takes the duty over."""
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update

from relay.store import outbox
from relay.store.models import Lease


def hold(conn, name: str, holder: str, now: datetime, seconds: float) -> bool:
    """Take or renew the named lease for holder until now + seconds; False while another holder's lease runs.
    The caller commits (on SQLite inside outbox.write_transaction)."""
    until = now + timedelta(seconds=seconds)
    renewed = conn.execute(update(Lease).where(Lease.name == name, or_(Lease.holder == holder, Lease.until < now))
                           .values(holder=holder, until=until)).rowcount
    if renewed:
        return True
    return outbox.backend(conn).insert_if_absent(conn, Lease.__table__, {"name": name, "holder": holder,
                                                                          "until": until})


def release(conn, name: str, holder: str) -> None:
    """Give the lease up if holder has it, so another process takes the duty over at once."""
    conn.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def holders(conn, now: datetime) -> dict[str, str]:
    """Each duty's current holder, by lease name (leases run out are left out)."""
    return dict(conn.execute(select(Lease.name, Lease.holder).where(Lease.until >= now)).all())
