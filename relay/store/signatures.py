"""Signed webhooks seen while their timestamps are valid, kept in the store every worker and instance shares, so
a captured request is accepted once."""
import hashlib
import time
from datetime import datetime

from sqlalchemy import bindparam, delete, insert
from sqlalchemy.exc import IntegrityError

from relay.store import outbox
from relay.store.models import SeenSignature

PRUNE_EVERY_SECONDS = 60.0  # expired signatures are deleted at most this often per process, in the same write
_INSERT = insert(SeenSignature)
_PRUNE = delete(SeenSignature).where(SeenSignature.expires_at < bindparam("now"))
_last_pruned = float("-inf")  # never: the first write prunes


def digest(source: str, signature: str) -> str:
    """The stored form of a source's signature."""
    return hashlib.sha256(f"{source}:{signature}".encode()).hexdigest()


def first_sighting(engine, source: str, signature: str, expires_at: datetime, now: datetime) -> bool:
    """Record a valid signature until it expires; tell whether it is new (False: it was seen before, a replay)."""
    global _last_pruned
    prune = time.monotonic() - _last_pruned >= PRUNE_EVERY_SECONDS
    try:
        with outbox.writer_connection(engine) as conn, outbox.write_transaction(conn):
            if prune:
                conn.execute(_PRUNE, {"now": now})
            conn.execute(_INSERT, {"digest": digest(source, signature), "expires_at": expires_at})
    except IntegrityError:
        return False
    if prune:
        _last_pruned = time.monotonic()
    return True
