"""storm valve

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

storm_trigger counts the new alerts of each route with a storm valve (sent or held) per window; storm holds a
route's storm while it lasts and what its summary incident last said. Held rows themselves are incident_log rows
with status 'held' (a plain string column: no change there).
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('storm',
    sa.Column('route', sa.String(length=128), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_held_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('summary_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('summary_held', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('route')
    )
    op.create_table('storm_trigger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('route', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('held', sa.Boolean(), nullable=False),
    sa.Column('log_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('alertname', sa.Text(), nullable=True),
    sa.Column('counted_label', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_storm_trigger_route', 'storm_trigger', ['route', 'created_at'], unique=False)


def downgrade():
    op.drop_index('ix_storm_trigger_route', table_name='storm_trigger')
    op.drop_table('storm_trigger')
    op.drop_table('storm')
