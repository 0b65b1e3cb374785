"""superseded rows name the row that superseded them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

An event that need not be sent (a repeat waiting behind an unsent copy of itself, a trigger and its resolve both
unsent) is kept with status 'superseded' and, in superseded_by, the id of the row it was collapsed into. No
foreign key: pruning may delete the superseding row first, and the id still says which one it was.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('superseded_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))


def downgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.drop_column('superseded_by')
