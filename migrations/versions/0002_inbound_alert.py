"""inbound alert

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('alert', sa.JSON(), nullable=True))



def downgrade():
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.drop_column('alert')

