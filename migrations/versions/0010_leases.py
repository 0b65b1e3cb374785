"""leases

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

lease names a periodic duty (the reconciler, heartbeats, the storm valve) and which delivery process runs it until
when: every instance offers to run each duty, and the lease keeps it to one of them at a time.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('lease',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=255), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade():
    op.drop_table('lease')
