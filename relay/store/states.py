"""The delivery state machine: a row's states, an attempt's outcomes, their groupings, and the one transition.

A row is pending → delivered, or → retrying → … → delivered | dead; a refused event is failed at once; an alert
no route took is unrouted from the start, and an event older than what the relay already has for its alert is
stale from the start; an event that need not be sent (a repeat waiting behind an unsent copy of itself, a trigger
and its resolve both unsent) is superseded, from the start or while it waits; a new alert past its route's storm
valve, and every later event of it, is held from the start. Every module that asks "retry or
give up?" asks after() here: the store records its answer, metrics and logs report the same answer.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta

# A row's states.
PENDING = "pending"
RETRYING = "retrying"
DELIVERED = "delivered"
FAILED = "failed"  # PagerDuty refused the event (400): retrying cannot help
DEAD = "dead"  # retried until the give-up age
UNROUTED = "unrouted"  # matched no route: kept so it is never silently dropped
STALE = "stale"  # older than the alert's state the relay already has (a late replica, a resolve before its
# trigger): kept so the log shows what was dropped and why, never sent
SUPERSEDED = "superseded"  # collapsed into another row of its alert (superseded_by names it): kept, never sent
HELD = "held"  # a new alert past its route's storm valve, or a later event of such an alert: kept, never sent

# An attempt's outcomes: PagerDuty's answer (DELIVERED, RETRY, FAILED), or what became of a sender.
RETRY = "retry"  # safe to send again later: nothing was accepted
SENDING = "sending"  # while its request is in flight (stays so if the sender died)
ABANDONED = "abandoned"  # its sender's lease ran out and another sender took the row over

STATUSES = (PENDING, RETRYING, DELIVERED, FAILED, DEAD, UNROUTED, STALE, SUPERSEDED, HELD)
OPEN = (PENDING, RETRYING)  # the delivery worker still has to act on them
# The same, as literal SQL: a partial index is only used when the query repeats its predicate verbatim.
OPEN_SQL = "status IN ('pending', 'retrying')"
FINAL = (DELIVERED, FAILED, DEAD)  # a delivery's last word
FINISHED = (*FINAL, UNROUTED, STALE, SUPERSEDED, HELD)  # nothing more will be done: safe to prune
NOT_SENT = (STALE, SUPERSEDED, HELD)  # stored from the start as never to be sent, with why
NOT_DELIVERED = (FAILED, DEAD)  # final, and PagerDuty never took it
REPLAYABLE = NOT_DELIVERED  # may be put back in the outbox by hand, while still the latest for its alert
# What the relay has said, or will say, of its alert: the newest such row is the alert's state.
SETS_STATE = (*OPEN, *FINAL)
# What the relay has heard of its alert, sent or not: the newest such row is the state an older event is compared
# with (a superseded resolve still says the alert is over; a held row, that its alert is held).
HEARD = (*SETS_STATE, SUPERSEDED, HELD)


@dataclass(frozen=True)
class Transition:
    """Where one attempt leaves its row: its new state, and when it is next due."""

    status: str
    due_at: datetime


def after(claimed, delivery, now: datetime, policy) -> Transition:
    """Move a claimed row (created_at, attempts) on by PagerDuty's answer (outcome, retry_after) and the retry
    rule."""
    if delivery.outcome == DELIVERED:
        return Transition(DELIVERED, now)
    if delivery.outcome == FAILED:
        return Transition(FAILED, now)
    if policy.gives_up(claimed.created_at, now):
        return Transition(DEAD, now)
    return Transition(RETRYING, now + timedelta(seconds=policy.delay(claimed.attempts, delivery.retry_after)))
