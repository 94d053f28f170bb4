"""Fixtures for tests against the real reference PDS + PLC directory (``shared/realpds``).

One network serves the whole session; ``realpds_accounts`` fills it once (see
``tests.support.realpds_population``). Tests that use these fixtures carry
``pytest.mark.realpds``; without node they skip locally and fail under CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.realpds import (
    INSTALL_TIMEOUT_S,
    PdsClient,
    RateLimitSettings,
    RealNetwork,
    RepoSnapshot,
    ensure_installed,
    is_installed,
)
from tests.support.realpds_population import populate


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before the first install, give realpds tests room for ``npm ci`` (minutes).

    The install runs inside the setup of whichever realpds test comes first, and the
    per-test timeout (pyproject) counts setup; once installed, the default applies.
    """
    selected = [item for item in items if item.get_closest_marker("realpds")]
    if not selected or is_installed():
        return
    for item in selected:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(INSTALL_TIMEOUT_S + 300))


@pytest.fixture(scope="session")
def realpds() -> Iterator[RealNetwork]:
    """One real PLC directory + PDS for the session (installed on first use)."""
    network = RealNetwork(ensure_installed())
    with network:
        yield network


@pytest.fixture(scope="session")
def realpds_client(realpds: RealNetwork) -> PdsClient:
    """A synchronous XRPC client for the session's real PDS and PLC."""
    return realpds.client()


@pytest.fixture(scope="session")
def realpds_accounts(realpds_client: PdsClient) -> dict[str, RepoSnapshot]:
    """The populated accounts by name (``alice``, ``bob``, ``carol`` big, ``dave`` empty)."""
    return populate(realpds_client)


@pytest.fixture(scope="session")
def realpds_ratelimited() -> Iterator[RealNetwork]:
    """A second network with rate limits on: 20 requests per 10 s per IP."""
    network = RealNetwork(ensure_installed(), rate_limits=RateLimitSettings(20, 10_000))
    with network:
        yield network
