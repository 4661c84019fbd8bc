"""Store: users, API tokens and usage in a SQL database (SQLite by default, PostgreSQL in production).

Blocking by design: callers on the event loop run it in a worker thread. Only a token's SHA-256 and its
first characters are stored; the token itself is returned once, when created.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import case, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from infergate.store.records import (
    DailyUsageRow,
    PrincipalRecord,
    SessionRecord,
    TokenInfo,
    UsageRow,
    UsageSummaryRow,
    UserInfo,
)
from infergate.store.schema import ApiToken, Usage, User, WebSession

__all__ = ["Store", "StoreConflict", "StoreError", "StoreNotFound", "hash_token"]

_PREFIX_LEN = 7  # "ig_" + 4 characters: enough to tell tokens apart in a listing, useless to an attacker
_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x1F6E_6761  # any constant: serialises `migrate()` across processes on PostgreSQL


class StoreError(Exception):
    """A store operation that cannot be done; the message says what to do instead."""


class StoreConflict(StoreError):
    pass


class StoreNotFound(StoreError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything this store hands out is UTC-aware."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite = url.startswith("sqlite")
        if self._sqlite:
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            self._engine: Engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(self._engine, "connect", _sqlite_pragmas)
        else:
            self._engine = create_engine(url, pool_pre_ping=True)
        self._session = sessionmaker(self._engine, expire_on_commit=False)

    def close(self) -> None:
        self._engine.dispose()

    # -- schema ------------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest revision; safe at every start, keeps every row."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        # Two processes starting together (the server and a CLI command, or two gateways) must not both
        # create the tables: a file lock beside a SQLite database, an advisory lock on PostgreSQL.
        with self._sqlite_lock(), self._engine.begin() as connection:
            if not self._sqlite:
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def _sqlite_lock(self) -> Iterator[None]:
        db_path = self.url.split("///", 1)[-1] if self._sqlite else ""
        if not db_path or db_path == ":memory:":
            yield
            return
        with open(f"{db_path}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- users -------------------------------------------------------------------------------------------
    def create_user(self, name: str, tier: str, admin: bool = False) -> UserInfo:
        if not name or name != name.strip():
            raise StoreError("a user name must be non-empty, without leading or trailing spaces")
        with self._session.begin() as s:
            user = User(name=name, tier=tier, admin=admin, created_at=datetime.now(UTC))
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise StoreConflict(
                    f"a user named {name!r} exists already; pick another name, or change its tier with "
                    f"`infergate users set-tier {name} TIER`"
                ) from None
            return _user(user)

    def set_tier(self, name: str, tier: str) -> UserInfo:
        with self._session.begin() as s:
            user = self._user_named(s, name)
            user.tier = tier
            return _user(user)

    def set_disabled(self, name: str, disabled: bool) -> UserInfo:
        """A disabled user's tokens and sessions stop working at once (their rows stay, for the usage history)."""
        with self._session.begin() as s:
            user = self._user_named(s, name)
            user.disabled = disabled
            if disabled:
                s.execute(delete(WebSession).where(WebSession.user_id == user.id))
            return _user(user)

    def sso_user(self, issuer: str, subject: str, name: str, tier: str) -> UserInfo:
        """The user an identity provider's `iss` and `sub` sign in as, created on first sign-in under ``name``
        (or ``name`` with a number, when another user has it). The tier is the configured SSO tier, set at every
        sign-in: the identity provider decides who signs in, the config what they get."""
        with self._session.begin() as s:
            user = s.scalar(select(User).where(User.sso_issuer == issuer, User.sso_subject == subject))
            if user is None:
                taken = set(s.scalars(select(User.name).where(User.name.startswith(name))))
                unique = next(n for n in (name, *(f"{name}-{i}" for i in range(2, 10**6))) if n not in taken)
                user = User(name=unique, tier=tier, admin=False, created_at=datetime.now(UTC))
                user.sso_issuer, user.sso_subject = issuer, subject
                s.add(user)
                s.flush()
            user.tier = tier
            return _user(user)

    def get_user(self, name: str) -> UserInfo | None:
        with self._session() as s:
            user = s.scalar(select(User).where(User.name == name))
            return _user(user) if user else None

    def list_users(self) -> list[UserInfo]:
        with self._session() as s:
            return [_user(u) for u in s.scalars(select(User).order_by(User.name))]

    @staticmethod
    def _user_named(s: Session, name: str) -> User:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            raise StoreNotFound(f"no user named {name!r}; create it with `infergate users create {name} --tier free`")
        return user

    # -- tokens ------------------------------------------------------------------------------------------
    def create_token(self, user_name: str) -> tuple[str, TokenInfo]:
        token = "ig_" + secrets.token_urlsafe(32)
        with self._session.begin() as s:
            user = self._user_named(s, user_name)
            row = ApiToken(
                user_id=user.id, prefix=token[:_PREFIX_LEN], token_hash=hash_token(token), created_at=datetime.now(UTC)
            )
            s.add(row)
            s.flush()
            return token, _token(row, user.name)

    def list_tokens(self, user_name: str) -> list[TokenInfo]:
        with self._session() as s:
            user = self._user_named(s, user_name)
            rows = s.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
            return [_token(t, user.name) for t in rows]

    def revoke_token(self, token: str) -> TokenInfo:
        """``token`` is the token itself, or its prefix as `tokens list` shows it (when only one matches)."""
        with self._session.begin() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
            if row is None:
                prefix = token.rstrip("…")
                matches = list(s.scalars(select(ApiToken).where(ApiToken.prefix == prefix[:_PREFIX_LEN])))
                if len(prefix) > _PREFIX_LEN or not matches:
                    raise StoreNotFound("no such token; `infergate tokens list USER` shows a user's tokens")
                if len(matches) > 1:
                    raise StoreConflict(f"{len(matches)} tokens start with {prefix!r}; pass the whole token")
                row = matches[0]
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            user = s.get(User, row.user_id)
            assert user is not None
            return _token(row, user.name)

    def revoke_token_id(self, token_id: int, user_name: str | None = None) -> TokenInfo:
        """Revoke a token by its id (as pages list them); with ``user_name``, only one of that user's."""
        with self._session.begin() as s:
            row = s.get(ApiToken, token_id)
            user = s.get(User, row.user_id) if row is not None else None
            if row is None or user is None or (user_name is not None and user.name != user_name):
                raise StoreNotFound(f"no token {token_id}; the token list shows the ones you can revoke")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            return _token(row, user.name)

    def list_all_tokens(self, limit: int = 500) -> list[TokenInfo]:
        """Every user's tokens, newest first."""
        with self._session() as s:
            query = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
            rows = s.execute(query.order_by(ApiToken.id.desc()).limit(limit))
            return [_token(t, name) for t, name in rows]

    def principal_for_hash(self, token_hash: str) -> PrincipalRecord | None:
        with self._session() as s:
            found = s.execute(
                select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == token_hash)
            ).first()
            if found is None:
                return None
            token, user = found
            if not hmac.compare_digest(token.token_hash, token_hash):
                return None
            return _principal(user, token.id, revoked=token.revoked_at is not None)

    # -- web sessions ------------------------------------------------------------------------------------
    def create_session(self, user_id: int, ttl_s: float) -> tuple[str, SessionRecord]:
        """A new browser session for the user: the id for the cookie (returned once, only its hash is kept)."""
        session_id = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._session.begin() as s:
            user = s.get(User, user_id)
            if user is None or user.disabled:
                raise StoreNotFound("this user no longer exists or is disabled; an admin can tell you more")
            # Sign-ins that ended are deleted as new ones start: the table holds only live sessions.
            s.execute(delete(WebSession).where(WebSession.expires_at < now))
            row = WebSession(
                session_hash=hash_token(session_id),
                user_id=user_id,
                csrf=secrets.token_urlsafe(24),
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_s),
            )
            s.add(row)
            s.flush()
            return session_id, SessionRecord(_principal(user, 0, revoked=False), row.csrf, row.expires_at)

    def session_for_hash(self, session_hash: str) -> SessionRecord | None:
        """The live session with this hash (None once it ended, or its user was disabled)."""
        with self._session() as s:
            found = s.execute(
                select(WebSession, User).join(User, User.id == WebSession.user_id).where(
                    WebSession.session_hash == session_hash
                )
            ).first()
            if found is None:
                return None
            row, user = found
            expires = _utc(row.expires_at) or row.expires_at
            if expires <= datetime.now(UTC) or user.disabled:
                return None
            return SessionRecord(_principal(user, 0, revoked=False), row.csrf, expires)

    def end_session(self, session_hash: str) -> None:
        with self._session.begin() as s:
            s.execute(delete(WebSession).where(WebSession.session_hash == session_hash))

    def touch_tokens(self, last_used: dict[int, datetime]) -> None:
        if not last_used:
            return
        with self._session.begin() as s:
            for token_id, when in last_used.items():
                s.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=when))

    # -- usage -------------------------------------------------------------------------------------------
    def record_usage(self, rows: list[UsageRow]) -> None:
        """One transaction: the whole batch is written, or none of it."""
        if not rows:
            return
        with self._engine.begin() as connection:  # a Core executemany: thousands of rows a second, cheaply
            connection.execute(insert(Usage), [_fields(r) for r in rows])

    def usage_summary(self, user_name: str | None = None) -> list[UsageSummaryRow]:
        name = func.coalesce(User.name, "(anonymous)")
        query = (
            select(name, Usage.model, *_USAGE_SUMS)
            .select_from(Usage)
            .outerjoin(User, User.id == Usage.user_id)
            .group_by(name, Usage.model)
            .order_by(name, Usage.model)
        )
        if user_name is not None:
            query = query.where(User.name == user_name)
        with self._session() as s:
            return [UsageSummaryRow(*(row[:2]), *(int(v) for v in row[2:])) for row in s.execute(query)]

    def usage_daily(self, user_name: str, days: int = 30) -> list[DailyUsageRow]:
        """A user's usage per UTC day and model, over the last ``days`` days (today included), oldest first."""
        since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
        # SQLite keeps the UTC time as written; PostgreSQL converts to the session's zone unless told.
        day = func.date(Usage.created_at) if self._sqlite else func.date(func.timezone("UTC", Usage.created_at))
        query = (
            select(day, Usage.model, *_USAGE_SUMS)
            .join(User, User.id == Usage.user_id)
            .where(User.name == user_name, Usage.created_at >= since)
            .group_by(day, Usage.model)
            .order_by(day, Usage.model)
        )
        with self._session() as s:
            return [
                DailyUsageRow(
                    row[0] if isinstance(row[0], date) else date.fromisoformat(str(row[0])),
                    row[1],
                    *(int(v) for v in row[2:]),
                )
                for row in s.execute(query)
            ]


# requests, prompt tokens, generated tokens, cache hits, errors: the sums every usage report shows.
_USAGE_SUMS = (
    func.count(Usage.id),
    func.coalesce(func.sum(Usage.prompt_tokens), 0),
    func.coalesce(func.sum(Usage.generated_tokens), 0),
    func.coalesce(func.sum(case((Usage.cached, 1), else_=0)), 0),
    func.coalesce(func.sum(case((Usage.status >= 400, 1), else_=0)), 0),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI write while the server reads; the busy timeout makes writers wait, not fail.
    # The timeout first: switching a new file to WAL takes a lock another process may hold for a moment.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":  # WAL stays set on the file
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _user(u: User) -> UserInfo:
    return UserInfo(
        id=u.id,
        name=u.name,
        tier=u.tier,
        admin=u.admin,
        created_at=_utc(u.created_at) or u.created_at,
        disabled=bool(u.disabled),
        sso=u.sso_subject is not None,
    )


def _principal(user: User, token_id: int, revoked: bool) -> PrincipalRecord:
    return PrincipalRecord(
        token_id=token_id,
        user_id=user.id,
        user_name=user.name,
        tier=user.tier,
        admin=user.admin,
        revoked=revoked,
        disabled=bool(user.disabled),
    )


def _token(t: ApiToken, user_name: str) -> TokenInfo:
    return TokenInfo(
        id=t.id,
        user_name=user_name,
        prefix=t.prefix,
        created_at=_utc(t.created_at) or t.created_at,
        last_used_at=_utc(t.last_used_at),
        revoked_at=_utc(t.revoked_at),
    )


def _fields(r: UsageRow) -> dict[str, Any]:
    return {
        "user_id": r.user_id,
        "token_id": r.token_id,
        "model": r.model,
        "task": r.task,
        "prompt_tokens": r.prompt_tokens,
        "generated_tokens": r.generated_tokens,
        "cached": r.cached,
        "status": r.status,
        "duration_ms": r.duration_ms,
        "created_at": r.created_at,
    }
