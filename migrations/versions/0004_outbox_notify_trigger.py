"""outbox NOTIFY trigger (PostgreSQL)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Every statement that makes rows pending (new rows, rows put back by replay or retry) sends
NOTIFY relay_outbox at commit, so delivery workers on every instance wake without the writer asking.
"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION relay_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT 1 FROM changed WHERE status = 'pending') THEN
            PERFORM pg_notify('relay_outbox', '');
        END IF;
    ELSIF EXISTS (SELECT 1 FROM changed JOIN previous USING (id)
                  WHERE changed.status = 'pending' AND previous.status <> 'pending') THEN
        PERFORM pg_notify('relay_outbox', '');  -- claims and outcomes leave or keep a status: no wake-up
    END IF;
    RETURN NULL;
END $$
"""


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: the delivery process watches the file's data_version instead
    op.execute(FUNCTION)
    # Transition tables allow one event per trigger: one for inserts, one for updates.
    transition_tables = {"INSERT": "NEW TABLE AS changed", "UPDATE": "OLD TABLE AS previous NEW TABLE AS changed"}
    for event, tables in transition_tables.items():
        op.execute(f"CREATE TRIGGER incident_log_notify_{event.lower()} AFTER {event} ON incident_log "
                   f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION relay_outbox_notify()")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for event in ("insert", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS incident_log_notify_{event} ON incident_log")
    op.execute("DROP FUNCTION IF EXISTS relay_outbox_notify()")
