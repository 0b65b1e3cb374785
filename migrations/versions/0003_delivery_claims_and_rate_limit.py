"""delivery claims and rate limit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

"""
from alembic import op
import sqlalchemy as sa


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
        batch_op.create_index('ix_incident_log_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_incident_log_order', ['routing_key', 'dedup_key', 'id'], unique=False)



def downgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.drop_index('ix_incident_log_order')
        batch_op.drop_index('ix_incident_log_due')
        batch_op.drop_column('claimed_until')
        batch_op.drop_column('claimed_by')

    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_attempt_rate')
        batch_op.drop_column('routing_key_hash')

