"""delivery claims and rate limit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

"""
import sqlalchemy as sa
from alembic import op

OPEN_SQL = "status IN ('pending', 'retrying')"


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('routing_key_hash', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_delivery_attempt_rate', ['routing_key_hash', 'started_at'], unique=False)

    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index("ix_incident_log_status")
        batch_op.create_index("ix_incident_log_open", ["id"], unique=False, sqlite_where=sa.text(OPEN_SQL), postgresql_where=sa.text(OPEN_SQL))
        batch_op.create_index('ix_incident_log_order', ['routing_key', 'dedup_key', 'id'], unique=False)



def downgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.drop_index('ix_incident_log_order')
        batch_op.drop_index("ix_incident_log_open")
        batch_op.create_index("ix_incident_log_status", ["status"], unique=False)
        batch_op.drop_column('claimed_until')
        batch_op.drop_column('claimed_by')

    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_attempt_rate')
        batch_op.drop_column('routing_key_hash')

