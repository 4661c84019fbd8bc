"""web sign-in: sessions, single sign-on identities, disabled users

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("sso_issuer", sa.String(500), nullable=True))
        batch.add_column(sa.Column("sso_subject", sa.String(255), nullable=True))
    # One user per identity at an identity provider (NULLs, users without one, never collide).
    op.create_index("ix_users_sso_identity", "users", ["sso_issuer", "sso_subject"], unique=True)
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_table("web_sessions")
    op.drop_index("ix_users_sso_identity", "users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("sso_subject")
        batch.drop_column("sso_issuer")
        batch.drop_column("disabled")
