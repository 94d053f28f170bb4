"""A dispatch config sent to the API: paths inside the data roots, receivers public,
no state_url, no private-address switch, every problem at its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsky_backfill.api.safety import ApiPolicy
from bsky_backfill.dispatch.loader import load_dispatch_config_text
from bsky_backfill.dispatch.safety import check_api_dispatch
from bsky_backfill.errors import ConfigError

DNS = {"hooks.example": ["93.184.216.34"], "rebind.example": ["10.0.0.5"]}


def resolve(host: str) -> list[str]:
    if host not in DNS:
        raise OSError("no such name")
    return DNS[host]


def keys(text: str, root: Path, *, allow_private: bool = False) -> list[str | None]:
    config = load_dispatch_config_text(text, base_dir=root, environ={})
    policy = ApiPolicy((root,), allow_private_addresses=allow_private, resolve=resolve)
    try:
        check_api_dispatch(config, policy)
    except ConfigError as exc:
        return [problem.key for problem in exc.problems]
    return []


def text(dataset: str, *urls: str, extra: str = "") -> str:
    hooks = "".join(
        f"    - {{name: h{i}, type: webhook, url: '{u}'}}\n" for i, u in enumerate(urls)
    )
    return f"dispatch:\n  name: x\n  dataset: {dataset}\n{extra}  integrations:\n{hooks}"


def test_a_public_receiver_and_a_dataset_in_a_root_pass(tmp_path: Path) -> None:
    assert keys(text("./data", "https://hooks.example/x"), tmp_path) == []


def test_every_problem_is_named(tmp_path: Path) -> None:
    found = keys(
        text(
            "/etc",
            "https://hooks.example/x",
            "https://rebind.example/x",
            "https://nowhere.example/x",
            extra="  state_url: postgresql://db/x\n  select: {uris: {path: ../elsewhere.txt}}\n",
        ),
        tmp_path,
    )
    assert found == [
        "dispatch.dataset",
        "dispatch.select.uris.path",
        "dispatch.state_url",
        "dispatch.integrations[1].url",
        "dispatch.integrations[2].url",
    ]


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://169.254.169.254/"])
def test_private_receivers_need_the_servers_switch(tmp_path: Path, url: str) -> None:
    config = text("./d", url, extra="  network: {allow_private_addresses: true}\n")
    assert keys(config, tmp_path) == [
        "dispatch.network.allow_private_addresses",
        "dispatch.integrations[0].url",
    ]
    assert keys(config, tmp_path, allow_private=True) == []
