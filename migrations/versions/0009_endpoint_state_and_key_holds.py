"""endpoint state and key holds

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

endpoint_state holds, per PagerDuty Events API URL, whether deliveries reach it: shared through the store, so every
delivery process of every instance sees one outage, probes it once at a time, and releases the backlog when a
probe gets through. key_hold holds a routing key PagerDuty rate limited until its Retry-After.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('endpoint_state',
    sa.Column('events_url', sa.Text(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('down_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('probe_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('probe_delay', sa.Float(), nullable=True),
    sa.Column('probe_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_failure_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('events_url')
    )
    op.create_table('key_hold',
    sa.Column('routing_key_hash', sa.String(length=64), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('routing_key_hash')
    )


def downgrade():
    op.drop_table('key_hold')
    op.drop_table('endpoint_state')
