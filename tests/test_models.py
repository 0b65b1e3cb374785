"""incident_log on both stores: the migration matches the models, rows round-trip as written."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from relay.store import outbox
from relay.store.models import IncidentLog, db


def test_migrations_build_exactly_the_models_schema(app):
    with app.app_context(), db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_row_keeps_full_key_for_delivery_but_shows_it_masked(app, routing_key):
    event = {"routing_key": routing_key, "event_action": "resolve", "dedup_key": "d-1"}
    with app.app_context():
        row = outbox.record(event, source="test")
        db.session.commit()
        loaded = db.session.get(IncidentLog, row.id)
        assert loaded.outbound_event() == event
        assert loaded.event == {"event_action": "resolve", "dedup_key": "d-1"}
        assert loaded.routing_key_masked == "…" + routing_key[-4:]
        assert loaded.created_at.tzinfo is not None and loaded.status == "pending"
