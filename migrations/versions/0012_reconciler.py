"""the reconciler: why the relay sent an event itself, and the alerts it watches

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

incident_log.cause says why the relay sent an event no sender asked for ("reconciled: silenced by …",
"reconciled: gone"). reconcile_watch holds each alert the reconciler asks its source about, with how many checks in
a row found it gone, so "gone after two checks" survives restarts and holds across instances.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cause', sa.Text(), nullable=True))
    op.create_table('reconcile_watch',
    sa.Column('routing_key_hash', sa.String(length=64), nullable=False),
    sa.Column('dedup_key', sa.String(length=255), nullable=False),
    sa.Column('log_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('misses', sa.Integer(), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('routing_key_hash', 'dedup_key')
    )


def downgrade():
    op.drop_table('reconcile_watch')
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.drop_column('cause')
