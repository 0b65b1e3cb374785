"""seen signatures

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

A signed Grafana webhook is accepted once: its signature is kept until its timestamp leaves the allowed skew,
in the store every worker and instance shares, and the same signature again is refused as a replay.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('seen_signature',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('digest')
    )
    with op.batch_alter_table('seen_signature', schema=None) as batch_op:
        batch_op.create_index('ix_seen_signature_expires_at', ['expires_at'], unique=False)


def downgrade():
    op.drop_table('seen_signature')
