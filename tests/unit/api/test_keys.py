"""API keys and the audit log: every test runs on a SQLite file in ``tmp_path`` and, when
the server is reachable (always under CI), on PostgreSQL in a schema of the test's own."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsky_backfill.api.keys import ApiKey, KeyNotFound, KeyStore, Scope
from bsky_backfill.errors import ConfigError, StoreError
from bsky_backfill.state.sql.engine import StoreOptions
from tests.support import require
from tests.support.postgres import fresh_schema, postgres_problem, postgres_url

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TOKEN = re.compile(r"bbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class Clock:
    """A settable clock for the store (aware UTC)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    options: StoreOptions = field(default_factory=StoreOptions)

    async def open(self, clock: Clock) -> KeyStore:
        return await KeyStore.open(self.url, self.options, clock=clock)


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{(tmp_path / 'keys.db').resolve()}")
        return
    problem = postgres_problem()
    require(problem is None, problem or "")
    async with fresh_schema() as schema:
        yield Backend("postgresql", postgres_url(), StoreOptions(schema=schema))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(backend: Backend, clock: Clock) -> AsyncIterator[KeyStore]:
    opened = await backend.open(clock)
    try:
        yield opened
    finally:
        await opened.aclose()


# --- scopes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "needed", "allowed"),
    [
        (Scope.READ, Scope.READ, True),
        (Scope.READ, Scope.WRITE, False),
        (Scope.READ, Scope.ADMIN, False),
        (Scope.WRITE, Scope.READ, True),
        (Scope.WRITE, Scope.WRITE, True),
        (Scope.WRITE, Scope.ADMIN, False),
        (Scope.ADMIN, Scope.READ, True),
        (Scope.ADMIN, Scope.WRITE, True),
        (Scope.ADMIN, Scope.ADMIN, True),
    ],
)
def test_scopes_nest(held: Scope, needed: Scope, allowed: bool) -> None:
    assert held.allows(needed) is allowed


def test_scopes_are_their_names() -> None:
    assert [str(scope) for scope in Scope] == ["read", "write", "admin"]
    assert Scope("write") is Scope.WRITE


# --- create and authenticate ---------------------------------------------------------------


async def test_created_token_authenticates_as_its_key(store: KeyStore) -> None:
    key, token = await store.create(Scope.WRITE, name="ci")

    match = TOKEN.fullmatch(token)
    assert match is not None
    assert match[1] == key.id
    assert key == ApiKey(id=key.id, name="ci", scope=Scope.WRITE, created_at=T0)
    found = await store.authenticate(token)
    assert found is not None
    assert (found.id, found.name, found.scope, found.created_at) == (key.id, "ci", "write", T0)
    assert found.scope.allows(Scope.READ)
    assert not found.scope.allows(Scope.ADMIN)


async def test_each_key_has_its_own_id_and_secret(store: KeyStore) -> None:
    made = [await store.create(Scope.READ) for _ in range(5)]
    assert len({key.id for key, _ in made}) == 5
    assert len({token for _, token in made}) == 5
    for key, token in made:
        found = await store.authenticate(token)
        assert found is not None
        assert found.id == key.id


async def test_create_accepts_a_scope_name_and_refuses_others(store: KeyStore) -> None:
    key, _ = await store.create("admin")  # type: ignore[arg-type]
    assert key.scope is Scope.ADMIN
    with pytest.raises(ValueError, match="root"):
        await store.create("root")  # type: ignore[arg-type]


async def test_the_token_is_never_stored_nor_logged(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "keys.db"
    store = await KeyStore.open(path, clock=clock)
    try:
        key, token = await store.create(Scope.ADMIN, name="ops")
        secret = token[len(f"bbk_{key.id}_") :]
        assert await store.authenticate(token) is not None
        await store.audit(key.id, "GET", "/api/backfill/jobs", 200)
        assert secret not in repr(await store.list())
        live = _database_bytes(tmp_path)  # the file and its WAL, while open
    finally:
        await store.aclose()
    stored = live + _database_bytes(tmp_path)  # after close: the WAL checkpointed
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored  # looked at the data
    # Root at DEBUG: SQLAlchemy's own log of statements and parameters is searched too.
    assert secret not in caplog.text
    assert any(getattr(r, "key_id", None) == key.id for r in caplog.records)  # logged by id


def _database_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


@pytest.mark.parametrize(
    "token",
    [
        "",
        "bbk_",
        "bbk__",
        "Bearer bbk_0123456789ab_" + "A" * 43,
        "bbk_0123456789ab_" + "A" * 42,
        "bbk_0123456789ab_" + "A" * 44,
        "bbk_0123456789AB_" + "A" * 43,  # ids are lower-case hex
        "bbk_0123456789a_" + "A" * 44,
        "xyz_0123456789ab_" + "A" * 43,
        "bbk_0123456789ab_" + "A" * 42 + "=",
        "bbk_0123456789ab_" + "A" * 42 + "\n",
        "bbk_0123456789ab_" + "٣" * 43,  # other scripts' digits are not base64url
    ],
)
async def test_malformed_tokens_are_refused(store: KeyStore, token: str) -> None:
    await store.create(Scope.READ)
    assert await store.authenticate(token) is None


async def test_wrong_secret_unknown_id_and_revoked_key_are_refused(store: KeyStore) -> None:
    key, token = await store.create(Scope.ADMIN)
    other_key, other_token = await store.create(Scope.READ)
    secret = token[len(f"bbk_{key.id}_") :]
    other_secret = other_token[len(f"bbk_{other_key.id}_") :]

    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    assert await store.authenticate(f"bbk_{key.id}_{flipped}") is None
    assert await store.authenticate(f"bbk_{key.id}_{other_secret}") is None  # another's secret
    assert await store.authenticate(f"bbk_{'f' * 12}_{secret}") is None  # no such id
    revoked = await store.revoke(key.id)
    assert await store.authenticate(token) is None
    assert revoked.revoked_at == T0
    assert not revoked.active
    assert await store.authenticate(other_token) is not None  # only that key


async def test_revoking_is_idempotent_and_keeps_the_first_time(
    store: KeyStore, clock: Clock
) -> None:
    key, _ = await store.create(Scope.READ)
    first = await store.revoke(key.id)
    clock.advance(3600)
    again = await store.revoke(key.id)
    assert first.revoked_at == again.revoked_at == T0


async def test_revoking_an_unknown_key_raises_key_not_found(store: KeyStore) -> None:
    with pytest.raises(KeyNotFound) as raised:
        await store.revoke("0123456789ab")
    assert isinstance(raised.value, StoreError)
    assert raised.value.key_id == "0123456789ab"
    assert "0123456789ab" in str(raised.value)


async def test_list_shows_every_key_oldest_first(store: KeyStore, clock: Clock) -> None:
    assert await store.list() == []
    made = []
    for index, scope in enumerate(Scope):
        made.append((await store.create(scope, name=f"k{index}"))[0])
        clock.advance(1)
    await store.revoke(made[1].id)

    listed = await store.list()
    assert [key.id for key in listed] == [key.id for key in made]
    assert [key.name for key in listed] == ["k0", "k1", "k2"]
    assert [key.scope for key in listed] == list(Scope)
    assert [key.active for key in listed] == [True, False, True]
    assert all(key.created_at.tzinfo is not None for key in listed)


async def test_last_used_is_recorded_at_most_once_a_minute(store: KeyStore, clock: Clock) -> None:
    _, token = await store.create(Scope.READ)
    assert (await store.list())[0].last_used_at is None

    async def last_used() -> datetime | None:
        return (await store.list())[0].last_used_at

    first = await store.authenticate(token)
    assert first is not None
    assert first.last_used_at == T0
    assert await last_used() == T0

    clock.advance(59)
    within = await store.authenticate(token)
    assert within is not None
    assert within.last_used_at == T0  # no write within the minute
    assert await last_used() == T0

    clock.advance(1)
    later = await store.authenticate(token)
    assert later is not None
    assert later.last_used_at == T0 + timedelta(seconds=60)
    assert await last_used() == T0 + timedelta(seconds=60)


async def test_refused_tokens_do_not_touch_last_used(store: KeyStore) -> None:
    _, token = await store.create(Scope.READ)
    await store.authenticate(token[:-1] + ("B" if token[-1] == "A" else "A"))
    assert (await store.list())[0].last_used_at is None


# --- the audit log --------------------------------------------------------------------------


async def test_audit_entries_newest_first(store: KeyStore, clock: Clock) -> None:
    assert await store.audit_entries() == []
    key, _ = await store.create(Scope.WRITE)
    await store.audit(key.id, "POST", "/api/backfill/start", 202, "job j1")
    clock.advance(1)
    await store.audit(None, "GET", "/api/backfill/jobs", 401)
    clock.advance(1)
    await store.audit(key.id, "DELETE", "/api/backfill/jobs/j1", 404, "no such job")

    entries = await store.audit_entries()
    assert [(e.key_id, e.method, e.path, e.status, e.detail) for e in entries] == [
        (key.id, "DELETE", "/api/backfill/jobs/j1", 404, "no such job"),
        (None, "GET", "/api/backfill/jobs", 401, ""),
        (key.id, "POST", "/api/backfill/start", 202, "job j1"),
    ]
    assert [e.at for e in entries] == [T0 + timedelta(seconds=s) for s in (2, 1, 0)]
    assert entries[0].id > entries[1].id > entries[2].id


async def test_audit_entries_limit(store: KeyStore) -> None:
    for status in range(200, 210):
        await store.audit(None, "GET", "/", status)
    assert [e.status for e in await store.audit_entries(limit=3)] == [209, 208, 207]
    assert len(await store.audit_entries()) == 10
    assert await store.audit_entries(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        await store.audit_entries(limit=-1)


async def test_audit_order_holds_when_times_tie(store: KeyStore) -> None:
    for index in range(5):  # the clock stands still: order comes from the id
        await store.audit(None, "GET", f"/{index}", 200)
    assert [e.path for e in await store.audit_entries()] == ["/4", "/3", "/2", "/1", "/0"]


async def test_audit_cuts_long_client_text(store: KeyStore) -> None:
    await store.audit(None, "GET", "/" + "x" * 10_000, 414, "d" * 10_000)
    (entry,) = await store.audit_entries()
    assert len(entry.path) == len(entry.detail) == 2_000


# --- opening -------------------------------------------------------------------------------


async def test_open_is_idempotent_and_keys_persist(backend: Backend, clock: Clock) -> None:
    first = await backend.open(clock)
    try:
        key, token = await first.create(Scope.READ, name="kept")
        await first.audit(key.id, "GET", "/", 200)
    finally:
        await first.aclose()
    second = await backend.open(clock)
    try:
        found = await second.authenticate(token)
        assert found is not None
        assert found.name == "kept"
        assert len(await second.audit_entries()) == 1
    finally:
        await second.aclose()
        await second.aclose()  # idempotent


async def test_open_refuses_a_database_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        await KeyStore.open("mysql://localhost/keys")
    with pytest.raises(ConfigError):
        await KeyStore.open("sqlite://")
    with pytest.raises(StoreError):
        await KeyStore.open(tmp_path / "missing" / "keys.db")


async def test_a_store_works_as_a_context_manager(tmp_path: Path) -> None:
    async with await KeyStore.open(tmp_path / "keys.db") as store:
        _, token = await store.create(Scope.READ)
        found = await store.authenticate(token)
        assert found is not None
        assert found.created_at.tzinfo is not None
        assert abs(found.created_at - datetime.now(UTC)) < timedelta(minutes=1)


# --- tokens from anywhere --------------------------------------------------------------------

# Random text, and text shaped like a token (right prefix, hex-ish id, base64url-ish tail),
# which reaches the database.
_near_tokens = st.builds(
    lambda id_, secret: f"bbk_{id_}_{secret}",
    st.text("0123456789abcdefABCDEF_", min_size=10, max_size=14),
    st.text("ABCxyz019-_=+/ \n\x00é", min_size=40, max_size=46),
)


@settings(
    max_examples=150,
    deadline=None,
    # One store serves every example: nothing a refused token does changes it.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(token=st.one_of(st.text(), _near_tokens, st.binary().map(lambda b: b.hex())))
async def test_any_string_authenticates_to_none_without_raising(
    store: KeyStore, token: str
) -> None:
    assert await store.authenticate(token) is None


async def test_non_string_tokens_are_refused(store: KeyStore) -> None:
    for token in (None, b"bbk_", 42):
        assert await store.authenticate(token) is None  # type: ignore[arg-type]
