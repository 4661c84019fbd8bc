"""What the web pages keep in the database: sessions, identities at an identity provider, disabled users and
usage per day, on SQLite and on the real PostgreSQL of this machine (a database of the test's own)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from infergate.store.records import UsageRow
from infergate.store.store import Store, StoreNotFound, hash_token

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'infergate.db'}")
        s.migrate()
        yield s
        s.close()
        return
    name = f"infergate_unit_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    s = Store(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        s.migrate()
        yield s
    finally:
        s.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_session_is_found_by_its_hash_until_it_ends(store: Store) -> None:
    user = store.create_user("ann", "pro")
    session_id, record = store.create_session(user.id, ttl_s=3600)
    found = store.session_for_hash(hash_token(session_id))
    assert found is not None and found.principal.user_name == "ann" and found.principal.tier == "pro"
    assert found.csrf == record.csrf and len(found.csrf) >= 24
    assert store.session_for_hash(session_id) is None  # the id itself is not what is stored
    store.end_session(hash_token(session_id))
    assert store.session_for_hash(hash_token(session_id)) is None


def test_an_expired_session_is_refused_and_cleared(store: Store) -> None:
    user = store.create_user("bob", "free")
    old, _ = store.create_session(user.id, ttl_s=0.05)
    time.sleep(0.1)
    assert store.session_for_hash(hash_token(old)) is None
    store.create_session(user.id, ttl_s=3600)  # a new sign-in deletes the sessions that ended
    with store._engine.connect() as c:  # noqa: SLF001 - the row count is what this test is about
        assert c.exec_driver_sql("SELECT count(*) FROM web_sessions").scalar() == 1


def test_disabling_a_user_ends_its_sessions_and_refuses_new_ones(store: Store) -> None:
    user = store.create_user("cy", "free")
    token, _ = store.create_token("cy")
    session_id, _ = store.create_session(user.id, ttl_s=3600)
    assert store.set_disabled("cy", True).disabled
    assert store.session_for_hash(hash_token(session_id)) is None
    principal = store.principal_for_hash(hash_token(token))
    assert principal is not None and principal.disabled
    with pytest.raises(StoreNotFound):
        store.create_session(user.id, ttl_s=3600)
    assert not store.set_disabled("cy", False).disabled
    principal = store.principal_for_hash(hash_token(token))
    assert principal is not None and not principal.disabled


def test_an_identity_signs_in_as_one_user_with_the_configured_tier(store: Store) -> None:
    store.create_user("dee@example.com", "free")  # a local user with the same name is not taken over
    first = store.sso_user("https://idp.example", "sub-1", "dee@example.com", "enterprise")
    assert first.name == "dee@example.com-2" and first.tier == "enterprise" and first.sso
    store.set_tier(first.name, "pro")
    again = store.sso_user("https://idp.example", "sub-1", "dee@example.com", "enterprise")
    assert again.id == first.id and again.tier == "enterprise"
    other = store.sso_user("https://other.example", "sub-1", "dee@example.com", "enterprise")
    assert other.id != first.id  # the same subject at another issuer is someone else
    assert not store.get_user("dee@example.com").sso  # type: ignore[union-attr]


def test_usage_per_day_and_model_for_one_user(store: Store) -> None:
    ann, bob = store.create_user("ann", "free"), store.create_user("bob", "free")
    now = datetime.now(UTC)

    def row(user_id: int, model: str, when: datetime, status: int = 200, cached: bool = False) -> UsageRow:
        return UsageRow(user_id, None, model, "text-generation", 10, 5, cached, status, 12.0, when)

    store.record_usage(
        [
            row(ann.id, "m/a", now),
            row(ann.id, "m/a", now, status=429),
            row(ann.id, "m/b", now, cached=True),
            row(ann.id, "m/a", now - timedelta(days=1)),
            row(ann.id, "m/a", now - timedelta(days=40)),  # outside the window
            row(bob.id, "m/a", now),
        ]
    )
    days = store.usage_daily("ann", days=30)
    assert [(d.day, d.model, d.requests) for d in days] == [
        ((now - timedelta(days=1)).date(), "m/a", 1),
        (now.date(), "m/a", 2),
        (now.date(), "m/b", 1),
    ]
    today_a = days[1]
    assert (today_a.prompt_tokens, today_a.generated_tokens, today_a.errors, today_a.cache_hits) == (20, 10, 1, 0)
    assert days[2].cache_hits == 1


def test_tokens_are_revoked_by_id_only_for_their_owner(store: Store) -> None:
    store.create_user("ann", "free")
    store.create_user("bob", "free")
    _, info = store.create_token("ann")
    with pytest.raises(StoreNotFound):
        store.revoke_token_id(info.id, "bob")
    assert store.revoke_token_id(info.id, "ann").revoked_at is not None
    assert [t.user_name for t in store.list_all_tokens()] == ["ann"]

