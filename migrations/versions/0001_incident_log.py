"""incident_log and delivery_attempt

Revision ID: 0001
Revises: 
Create Date: 2026-11-26

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('incident_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('route', sa.String(length=128), nullable=True),
    sa.Column('event_action', sa.String(length=16), nullable=False),
    sa.Column('dedup_key', sa.String(length=255), nullable=True),
    sa.Column('summary', sa.String(length=1024), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=True),
    sa.Column('routing_key', sa.String(length=255), nullable=False),
    sa.Column('routing_key_masked', sa.String(length=16), nullable=False),
    sa.Column('event', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('pd_status', sa.String(length=64), nullable=True),
    sa.Column('pd_message', sa.String(length=1024), nullable=True),
    sa.Column('pd_errors', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.create_index('ix_incident_log_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_incident_log_dedup_key', ['dedup_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_incident_log_status'), ['status'], unique=False)

    op.create_table('delivery_attempt',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('log_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['log_id'], ['incident_log.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_attempt_log_id'), ['log_id'], unique=False)



def downgrade():
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_attempt_log_id'))

    op.drop_table('delivery_attempt')
    with op.batch_alter_table('incident_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incident_log_status'))
        batch_op.drop_index('ix_incident_log_dedup_key')
        batch_op.drop_index('ix_incident_log_created_at')

    op.drop_table('incident_log')
