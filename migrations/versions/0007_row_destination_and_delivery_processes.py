"""row destination and delivery processes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Each incident_log row keeps the Events API URL it was stored for, so every attempt of it goes to that endpoint,
whichever process sends it (rows from before, NULL, go to the sender's PAGERDUTY_EVENTS_URL). delivery_process
holds one row per running delivery loop, beaten every few seconds: who delivers now, and to which endpoint.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('events_url', sa.Text(), nullable=True))

    op.create_table('delivery_process',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('events_url', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade():
    op.drop_table('delivery_process')
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.drop_column('events_url')
