"""One suite, every sink: the exactly-once protocol as a dataset reader sees it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bsky_backfill import __version__
from bsky_backfill.core.models import DidState, RepoResult
from bsky_backfill.core.spill import SpilledRows
from bsky_backfill.sinks import SINK_TYPES, AsyncSink, Sink, SinkWriteFailed
from bsky_backfill.sinks.manifest import canonical_json
from tests.support import require
from tests.support.sinks import (
    MANIFEST,
    crash_plan,
    expected,
    first_batch,
    kill_during,
    plan,
    repo_result,
    run_job,
    visible,
)

DONE = DidState.COMPLETE
NOTHING: tuple[Counter[tuple], Counter[tuple]] = (Counter(), Counter())
FIRST = first_batch()


@pytest.fixture(params=sorted(SINK_TYPES))
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Sink:
    return SINK_TYPES[request.param](tmp_path / "dataset")


def seen(sink: Sink) -> tuple[Counter[tuple], Counter[tuple]]:
    return visible(sink.format, sink.path)


def stage_all(sink: Sink, batches: list[tuple]) -> None:
    for batch_id, results, supersedes in batches:
        sink.stage(batch_id, results, supersedes)


def data_files(sink: Sink) -> set[str]:
    """Every file a reader could look at: the whole dataset directory but ``_staging``."""
    return {
        p.relative_to(sink.path).as_posix()
        for p in sink.path.rglob("*")
        if p.is_file() and not p.relative_to(sink.path).as_posix().startswith("_staging/")
    }


def test_stage_then_publish_shows_every_row_once(sink: Sink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    assert seen(sink) == expected(FIRST)
    assert sum(seen(sink)[0].values()) == 12
    assert sink.staged_batches() == set()


def test_a_huge_repos_spilled_rows_are_written_like_rows_in_memory(
    sink: Sink, tmp_path: Path
) -> None:
    small, huge = repo_result("did:plc:small", n=4), repo_result("did:plc:huge", n=23)
    spilled = SpilledRows(tmp_path)
    for start in range(0, 23, 5):
        spilled.append(huge.records[start : start + 5])
    sink.stage("b1", [small, RepoResult(huge.repo, spilled)])
    sink.publish("b1")
    assert seen(sink) == expected([("b1", [small, huge], {})])
    spilled.close()


def test_staged_rows_are_invisible_until_published(sink: Sink) -> None:
    stage_all(sink, FIRST)
    assert seen(sink) == NOTHING
    assert sink.staged_batches() == {"b1"}


def test_publish_twice_is_publish_once(sink: Sink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    sink.publish("b1")
    sink.publish("never-staged")
    assert seen(sink) == expected(FIRST)


def test_discard_removes_only_the_staged_batch(sink: Sink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    sink.stage("b2", plan([("b2", [("did:plc:c", 1, 4, DONE)])])[0][1])
    sink.discard("b2")
    sink.discard("b2")
    sink.discard("b1")
    sink.publish("b2")
    assert sink.staged_batches() == set()
    assert seen(sink) == expected(FIRST)


def test_staging_again_replaces_what_was_staged(sink: Sink) -> None:
    sink.stage("b1", FIRST[0][1])
    second = plan([("b1", [("did:plc:z", 2, 3, DONE)])])
    sink.stage("b1", second[0][1])
    sink.publish("b1")
    assert seen(sink) == expected(second)


def test_an_empty_batch_is_staged_and_published(sink: Sink) -> None:
    sink.stage("b0", [])
    assert sink.staged_batches() == {"b0"}
    sink.publish("b0")
    assert sink.staged_batches() == set()
    assert seen(sink) == NOTHING


def test_staging_a_published_batch_is_refused(sink: Sink) -> None:
    stage_all(sink, FIRST)
    sink.publish("b1")
    with pytest.raises(ValueError, match="already published"):
        sink.stage("b1", FIRST[0][1])
    assert seen(sink) == expected(FIRST)


@pytest.mark.parametrize("bad", ["", "a.b", "../x", "x/y", "-a", "_a", "x" * 65, "b1.tmp"])
def test_bad_batch_ids_are_refused(sink: Sink, bad: str) -> None:
    for call in (lambda: sink.stage(bad, []), lambda: sink.publish(bad)):
        with pytest.raises(ValueError, match="invalid batch id"):
            call()
    with pytest.raises(ValueError, match="invalid batch id"):
        sink.stage("b1", [], {"did:plc:a": bad})


def test_a_batch_cannot_supersede_itself(sink: Sink) -> None:
    with pytest.raises(ValueError, match="its own rows"):
        sink.stage("b1", FIRST[0][1], {"did:plc:a": "b1"})


def test_supersede_replaces_a_dids_rows(sink: Sink) -> None:
    batches = FIRST + plan([("b2", [("did:plc:a", 2, 4, DONE)])])
    batches[1][2].update({"did:plc:a": "b1"})
    stage_all(sink, batches)
    sink.publish("b1")
    sink.publish("b2")
    sink.publish("b2")
    assert seen(sink) == expected(batches)
    records, _ = seen(sink)
    assert {r[2] for r in records if r[0] == "did:plc:a"} == {f"3v2k{i:05d}" for i in range(4)}


def test_superseding_every_row_of_a_file_deletes_it(sink: Sink) -> None:
    one = plan([("b1", [("did:plc:a", 1, 7, DONE)]), ("b2", [("did:plc:a", 2, 2, DONE)])])
    stage_all(sink, one)
    sink.publish("b1")
    before = data_files(sink)
    sink.publish("b2")
    assert seen(sink) == expected(one)
    if sink.format != "sqlite":
        assert not any("part-b1." in f for f in data_files(sink)), before


def test_supersede_holds_whatever_the_publish_order(sink: Sink) -> None:
    batches = plan([("b1", [("did:plc:a", 1, 7, DONE)]), ("b2", [("did:plc:a", 2, 3, DONE)])])
    stage_all(sink, batches)
    sink.publish("b2")
    sink.publish("b1")
    assert seen(sink) == expected(batches)


@pytest.mark.parametrize("fmt", sorted(SINK_TYPES))
def test_sigkill_anywhere_then_recovery_gives_exactly_a_clean_runs_rows(
    fmt: str, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path, log = tmp_path / "dataset", tmp_path / "committed.log"
    command = [sys.executable, "-m", "tests.support.sinks", fmt, str(path), str(log)]
    kills = kill_during(command, ("stage", "publish", "stage", "publish"), rng, pause=0.06)
    sink = SINK_TYPES[fmt](path)
    run_job(sink, log, crash_plan(), lambda _: None)
    assert seen(sink) == expected(crash_plan()), f"seed {seed}, killed during {kills}"
    assert sink.staged_batches() == set()


def test_manifest_lists_every_file_and_is_written_last(sink: Sink) -> None:
    batches = FIRST + plan([("b2", [("did:plc:c", 1, 9, DONE)])])
    stage_all(sink, batches)
    sink.publish("b1")
    with pytest.raises(ValueError, match="batches staged"):
        sink.finish(MANIFEST)
    sink.publish("b2")
    assert not (sink.path / "manifest.json").exists()

    path = Path(sink.finish(MANIFEST))
    manifest = json.loads(path.read_text())
    records, repos = expected(batches)
    assert manifest["job_id"] == "job-1"
    assert manifest["format"] == sink.format
    assert manifest["tool"] == {"name": "bsky-backfill", "version": __version__}
    assert manifest["started_at"] == "2026-01-02T03:04:05.000000Z"
    assert manifest["config"] == MANIFEST.config
    assert manifest["config_sha256"] == hashlib.sha256(canonical_json(MANIFEST.config)).hexdigest()
    assert manifest["counts"] == {
        "repos": 4,
        "repos_by_status": {"complete": 3, "not_found": 1},
        "records": sum(records.values()),
        "records_by_collection": dict(sorted(Counter(r[1] for r in records.elements()).items())),
    }
    files = manifest["files"]
    assert {f["path"] for f in files} == data_files(sink) - {"manifest.json"}
    for f in files:
        file = sink.path / f["path"]
        assert f["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert f["bytes"] == file.stat().st_size
        assert file.stat().st_mtime_ns <= path.stat().st_mtime_ns
    rows = Counter[str]()
    for f in files:
        rows[f["kind"]] += f["rows"]
        if f["kind"] != "sqlite":
            assert f["rows"] == _rows_in(sink.path / f["path"])
    assert rows == (
        {"sqlite": sum(records.values()) + sum(repos.values())}
        if sink.format == "sqlite"
        else {"records": sum(records.values()), "repos": sum(repos.values())}
    )

    sink.stage("b3", plan([("b3", [("did:plc:d", 1, 2, DONE)])])[0][1])
    assert path.exists()
    sink.publish("b3")
    assert not path.exists()


def _rows_in(file: Path) -> int:
    if file.suffix == ".parquet":
        return int(pq.ParquetFile(file).metadata.num_rows)
    return len(file.read_bytes().splitlines())


async def test_async_sink_does_the_work_in_another_thread(sink: Sink) -> None:
    threads = set()
    stage = sink.stage

    def spy(*args: object) -> None:
        threads.add(threading.get_ident())
        stage(*args)  # type: ignore[arg-type]

    sink.stage = spy  # type: ignore[method-assign]
    wrapped = AsyncSink(sink)
    await wrapped.stage("b1", FIRST[0][1])
    assert await wrapped.staged_batches() == {"b1"}
    await wrapped.publish("b1")
    await wrapped.stage("b2", [])
    await wrapped.discard("b2")
    assert Path(await wrapped.finish(MANIFEST)).name == "manifest.json"
    assert threads
    assert threading.get_ident() not in threads
    assert seen(sink) == expected(FIRST)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (needs root): writes there fail as on a full disk."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = os.geteuid() == 0 and _mount(["-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)])
    require(done, "root and mount(8), for a tiny tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _incompressible(did: str) -> RepoResult:
    """A result of about 700 KB in any format: 300 records padded with random hex."""
    result = repo_result(did, n=300)
    padded = [
        r._replace(record=json.dumps({"pad": os.urandom(1024).hex()})) for r in result.records
    ]
    return RepoResult(result.repo, tuple(padded))


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_a_full_disk_raises_one_typed_error_and_changes_nothing(sink: Sink, tiny_fs: Path) -> None:
    sink = type(sink)(tiny_fs / "dataset")
    stage_all(sink, FIRST)
    sink.publish("b1")
    before, files = seen(sink), data_files(sink)
    big = [("b2", [_incompressible(f"did:plc:big{i}") for i in range(4)], {})]

    with pytest.raises(SinkWriteFailed) as failure:
        stage_all(sink, big)
    assert failure.value.path.startswith(str(tiny_fs))
    if sink.format != "sqlite":
        assert failure.value.errno == errno.ENOSPC
    assert "cannot write the dataset at" in str(failure.value)
    assert (seen(sink), data_files(sink)) == (before, files)
    assert sink.staged_batches() == set()

    assert _mount(["-o", "remount,size=64m", str(tiny_fs)])
    stage_all(sink, big)
    sink.publish("b2")
    assert seen(sink) == expected(FIRST + big)


def test_a_read_only_file_system_fails_cleanly_and_publish_resumes(
    sink: Sink, tiny_fs: Path
) -> None:
    sink = type(sink)(tiny_fs / "dataset")
    stage_all(sink, FIRST)
    sink.publish("b1")
    sink.finish(MANIFEST)
    second = plan([("b2", [("did:plc:a", 2, 3, DONE)])])
    second[0][2]["did:plc:a"] = "b1"
    stage_all(sink, second)
    before, files = seen(sink), data_files(sink)

    assert _mount(["-o", "remount,ro", str(tiny_fs)])
    with pytest.raises(SinkWriteFailed):
        sink.publish("b2")
    with pytest.raises(SinkWriteFailed):
        sink.stage("b3", [])
    assert (seen(sink), data_files(sink)) == (before, files)

    assert _mount(["-o", "remount,rw", str(tiny_fs)])
    sink.publish("b2")
    assert seen(sink) == expected(FIRST + second)
