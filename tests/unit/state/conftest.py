"""Every store test runs against each backend: a SQLite file in ``tmp_path`` and, when the
server is reachable (always under CI), PostgreSQL in a schema of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bsky_backfill.state import SqlJobStore, StoreOptions
from tests.support import require
from tests.support.postgres import fresh_schema, postgres_problem, postgres_url

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Backend:
    """Where a test's store lives: ``url`` and ``options`` open it (also in a child)."""

    name: str
    url: str
    options: StoreOptions = field(default_factory=StoreOptions)

    async def open(self, clock: Callable[[], datetime] | None = None) -> SqlJobStore:
        if clock is None:
            return await SqlJobStore.open(self.url, self.options)
        return await SqlJobStore.open(self.url, self.options, clock=clock)

    def child_args(self) -> list[str]:
        """Arguments that tell ``tests.support.state_worker`` how to open this store."""
        schema = ["--schema", self.options.schema] if self.options.schema else []
        return ["--url", self.url, *schema]


class Clock:
    """A settable clock for the store (aware UTC)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", sqlite_url(tmp_path / "state.db"))
        return
    problem = postgres_problem()
    require(problem is None, problem or "")
    async with fresh_schema() as schema:
        yield Backend("postgresql", postgres_url(), StoreOptions(schema=schema))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(backend: Backend, clock: Clock) -> AsyncIterator[SqlJobStore]:
    opened = await backend.open(clock=clock)
    try:
        yield opened
    finally:
        await opened.aclose()
