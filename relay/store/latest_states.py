"""The newest row of each alert, read as a webhook's events are stored (for collapse) and by the reconciler."""
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import aliased

from relay.store import states
from relay.store.models import IncidentLog
from relay.store.outbox import backend


def _latest_states_statement():
    """The newest row each alert among the given keys has had, sent or superseded, with the row a superseded one
    was collapsed into: built once, its IN lists expanded at execution, so a webhook pays for one cached statement
    and not for building and compiling a new one."""
    log = IncidentLog
    carrier = aliased(IncidentLog, name="carrier")
    newest = select(func.max(log.id)).where(
        log.dedup_key.in_(bindparam("dedup_keys", expanding=True)),
        log.routing_key.in_(bindparam("routing_keys", expanding=True)),
        log.status.in_(states.HEARD)).group_by(log.routing_key, log.dedup_key)
    return select(log.id, log.routing_key, log.dedup_key, log.event_action, log.status, log.alert, log.event,
                  log.cause, log.created_at, log.superseded_by, carrier.event_action.label("carrier_action"),
                  carrier.status.label("carrier_status"), carrier.created_at.label("carrier_created_at")) \
        .outerjoin(carrier, carrier.id == log.superseded_by).where(log.id.in_(newest))


_LATEST_STATES = _latest_states_statement()


def latest_states(conn, pairs) -> dict[tuple[str, str], object]:
    """The newest row each alert has had (id, event_action, status, alert, event, cause, created_at, superseded_by, and
    the carrier_action, carrier_status and carrier_created_at of the row superseding it), by (routing key, dedup
    key), its alert held against other writers until the transaction ends."""
    if not pairs:
        return {}
    rows = backend(conn).read_holding_alerts(conn, pairs, _LATEST_STATES, {
        "dedup_keys": sorted({dedup_key for _, dedup_key in pairs}),
        "routing_keys": sorted({routing_key for routing_key, _ in pairs})})
    return {(row.routing_key, row.dedup_key): row for row in rows if (row.routing_key, row.dedup_key) in pairs}

