"""heartbeats

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

heartbeat holds each heartbeat the relay watches (a route's watchdog per sender or label set, a job from
HEARTBEATS): when it was last seen, when it is next expected, its state, and its incident's dedup key.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('heartbeat',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('route', sa.String(length=128), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('routing_key', sa.String(length=255), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('within_seconds', sa.Float(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('watched_since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_message', sa.Text(), nullable=True),
    sa.Column('next_expected', sa.DateTime(timezone=True), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dedup_key', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade():
    op.drop_table('heartbeat')
