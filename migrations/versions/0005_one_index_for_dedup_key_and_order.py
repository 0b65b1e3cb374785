"""one index for dedup_key lookups and per-alert order

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

ix_incident_log_order led with routing_key, so dedup_key lookups needed an index of their own. Both were
written on every insert, each at a page of its own (dedup keys are hashes). One index on (dedup_key,
routing_key, id) serves the log's dedup_key filter and the claim's per-alert probe (equality on both keys,
then id): every stored event writes one index page fewer.
"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.create_index('ix_incident_log_alert_order', ['dedup_key', 'routing_key', 'id'], unique=False)
        batch_op.drop_index('ix_incident_log_order')
        batch_op.drop_index('ix_incident_log_dedup_key')


def downgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.create_index('ix_incident_log_dedup_key', ['dedup_key'], unique=False)
        batch_op.create_index('ix_incident_log_order', ['routing_key', 'dedup_key', 'id'], unique=False)
        batch_op.drop_index('ix_incident_log_alert_order')
