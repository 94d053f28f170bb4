"""A whole dispatch run in-process: bookkeeping across runs, the per-run cap, one failed
integration not stopping another."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsky_backfill.dispatch import DispatchMetrics, load_dispatch_config_text, run_dispatch
from bsky_backfill.dispatch.config import DispatchConfig
from bsky_backfill.dispatch.runner import state_location
from tests.unit.dispatch.conftest import Receiver, status


def config(dataset: Path, hooks: dict[str, str], extra: str = "") -> DispatchConfig:
    integrations = "".join(
        f"    - {{name: {name}, type: webhook, url: '{url}', backoff_seconds: 0.01,"
        " max_retries: 1}\n"
        for name, url in hooks.items()
    )
    text = (
        f"dispatch:\n  name: t\n  dataset: {dataset}\n  batch_size: 6\n"
        f"  network: {{allow_private_addresses: true}}\n{extra}  integrations:\n{integrations}"
    )
    return load_dispatch_config_text(text, base_dir=dataset, environ={})


async def test_a_rerun_sends_only_what_was_never_acknowledged(
    dataset: Path, receiver: Receiver
) -> None:
    spec = config(dataset, {"hook": receiver.url}, "  select: {max_records: 25}\n")
    metrics = DispatchMetrics("t")
    first = await run_dispatch(spec, metrics=metrics)
    (hook,) = first.integrations
    assert (hook.sent, hook.batches, hook.skipped, hook.error) == (25, 5, 0, None)
    assert (
        metrics.registry.get_sample_value(
            "bsky_backfill_dispatch_records_total",
            {"dispatch": "t", "integration": "hook", "outcome": "acknowledged"},
        )
        == 25
    )
    second = (await run_dispatch(spec)).integrations[0]
    assert (second.sent, second.skipped, second.acknowledged) == (15, 25, 40)
    third = (await run_dispatch(spec)).integrations[0]
    assert (third.sent, third.skipped) == (0, 40)
    sent = [(i["uri"], i["cid"]) for body in receiver.bodies for i in body["items"]]
    assert len(sent) == len(set(sent)) == 40
    assert state_location(spec)[0] == dataset / "_state" / "dispatch.sqlite"


async def test_a_failed_integration_does_not_stop_the_others(
    dataset: Path, receiver: Receiver
) -> None:
    receiver.answers = [status(200), status(403)] + [status(200)] * 20
    spec = config(dataset, {"a": receiver.url, "b": receiver.url})
    outcome = await run_dispatch(spec)
    (failed,) = outcome.failed
    assert "HTTP 403" in (failed.error or "")
    done = next(i for i in outcome.integrations if i.error is None)
    assert done.sent == 40
    # the failed batch was closed: the next run sends it again, not as a crash's leftover
    rerun = {i.name: i for i in (await run_dispatch(spec)).integrations}
    assert rerun[failed.name].sent == 40 - failed.sent
    assert rerun[failed.name].resent == 0


async def test_a_missing_dataset_fails_before_anything_is_sent(tmp_path: Path) -> None:
    spec = config(tmp_path / "nothing", {"hook": "http://127.0.0.1:9/x"})
    with pytest.raises(Exception, match="no dataset"):
        await run_dispatch(spec)
    assert not (tmp_path / "nothing").exists()
