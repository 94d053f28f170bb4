"""The HTTP API on a live server (``bsky-backfill serve`` on loopback) against the
simulated network: a job from a stored config to an exact dataset, cancel and resume,
keys and scopes, per-key rate limits, the audit log, and unsafe configs refused."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bsky_backfill.api.app import DATABASE
from bsky_backfill.api.keys import KeyStore
from tests.support.jobs import CLI, dids_of, job_yaml, run_cli
from tests.support.metrics import parse
from tests.support.server import Server, create_key, running_server, wait_for
from tests.support.sinks import visible


def api_job(plc: object, *, name: str = "api", rate: float = 20, out: str = "out") -> str:
    """At the server's default pace limit (20 requests per second per host)."""
    return job_yaml(plc, name=name, rate=rate, batch=5, out=out)


@pytest.fixture
def server(tmp_path: Path, fakenet_process: dict[str, object]) -> Any:
    with running_server(tmp_path / "server", "--allow-private-addresses") as running:
        (running.root / "dids.txt").write_text("\n".join(dids_of(fakenet_process)) + "\n")
        yield running


def test_a_stored_config_runs_to_a_dataset_equal_to_the_clis(
    server: Server, tmp_path: Path, fakenet_process: dict[str, object]
) -> None:
    writer = server.client(create_key(server.home, "write"))
    text = api_job(fakenet_process["plc"])
    saved = writer.post("/api/backfill/configs", json={"name": "api", "yaml": text})
    assert saved.status_code == 201, saved.text
    assert saved.json()["version"] == 1
    assert (
        writer.post("/api/backfill/configs", json={"name": "api", "yaml": text}).json()["version"]
        == 2
    )
    assert [c["name"] for c in writer.get("/api/backfill/configs").json()] == ["api"]

    started = writer.post("/api/backfill/start", json={"config_name": "api"})
    assert started.status_code == 202, started.text
    assert started.json() == {"job_id": "api"}
    status = wait_for(writer, "api", {"completed", "failed"})
    assert status["state"] == "completed", status
    assert status["config_version"] == 2
    assert sum(status["counts"].values()) == len(dids_of(fakenet_process))
    assert status["records"] > 1000
    assert [job["job_id"] for job in writer.get("/api/backfill/jobs").json()] == ["api"]

    cli = tmp_path / "cli"
    cli.mkdir()
    (cli / "dids.txt").write_text((server.root / "dids.txt").read_text())
    (cli / "job.yaml").write_text(text)
    assert run_cli(cli / "job.yaml") == 0
    fetched = (11, 11)  # fetched_at: differs between two runs

    def rows(path: Path) -> tuple[set[tuple], set[tuple]]:
        records, repos = visible("parquet", path)
        return (
            {r[: fetched[0]] + r[fetched[0] + 1 :] for r in records},
            {r[: fetched[1]] + r[fetched[1] + 1 :] for r in repos},
        )

    assert rows(server.root / "out") == rows(cli / "out")
    metrics = parse(httpx.get(f"{server.url}/metrics").text)
    assert metrics.total("bsky_backfill_jobs", state="completed") == 1
    assert metrics.total("bsky_backfill_job_state", job_id="api", state="completed") == 1
    repos = metrics.by("bsky_backfill_repos_total", "status")
    assert repos == {state: float(n) for state, n in status["counts"].items() if n}


def test_cancel_stops_a_running_job_which_resumes_when_started_again(
    server: Server, fakenet_process: dict[str, object]
) -> None:
    writer = server.client(create_key(server.home, "write"))
    body = {"config_yaml": api_job(fakenet_process["plc"], name="slow", rate=3)}
    assert writer.post("/api/backfill/start", json=body).status_code == 202
    running = wait_for(writer, "slow", {"running"}, timeout=30)
    assert running["state"] == "running"
    assert writer.post("/api/backfill/start", json=body).status_code == 409
    time.sleep(1.5)
    began = time.monotonic()
    cancelled = writer.delete("/api/backfill/jobs/slow")
    assert cancelled.status_code == 202
    assert time.monotonic() - began < 10
    assert cancelled.json()["state"] == "cancelled"
    done_before = sum(n for s, n in cancelled.json()["counts"].items() if s != "pending")
    assert writer.get("/api/backfill/status/slow").json()["state"] == "cancelled"

    fast = {"config_yaml": api_job(fakenet_process["plc"], name="slow")}
    assert writer.post("/api/backfill/start", json=fast).status_code == 202
    status = wait_for(writer, "slow", {"completed", "failed"})
    assert status["state"] == "completed", status
    assert sum(status["counts"].values()) == len(dids_of(fakenet_process))
    assert done_before < len(dids_of(fakenet_process))


def test_keys_and_scopes_guard_every_route_and_mutations_are_audited(
    server: Server, fakenet_process: dict[str, object]
) -> None:
    reader_token = create_key(server.home, "read")
    reader, anonymous = server.client(reader_token), server.client()
    body = {"config_yaml": api_job(fakenet_process["plc"])}
    assert anonymous.get("/api/backfill/jobs").status_code == 401
    assert anonymous.get("/api/backfill/jobs").headers["WWW-Authenticate"] == "Bearer"
    assert server.client("bbk_nope_nope").get("/api/backfill/jobs").status_code == 401
    assert reader.get("/api/backfill/jobs").status_code == 200
    refused = reader.post("/api/backfill/start", json=body)
    assert refused.status_code == 403
    assert "scope" in refused.json()["detail"]
    assert reader.get("/api/backfill/status/none").status_code == 404

    async def audit() -> list[tuple[str | None, str, str, int]]:
        async with await KeyStore.open(server.home / DATABASE) as store:
            return [(e.key_id, e.method, e.path, e.status) for e in await store.audit_entries()]

    entries = asyncio.run(audit())
    assert ("POST", "/api/backfill/start", 403) in [e[1:] for e in entries]
    assert all(e[1] in ("POST", "DELETE") for e in entries)


def test_a_key_revoked_with_the_cli_is_refused_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        token = create_key(server.home, "read")
        client = server.client(token)
        assert client.get("/api/backfill/jobs").status_code == 200
        key_id = token.split("_")[1]
        listed = subprocess.run(
            [*CLI, "keys", "list", "--home", str(server.home)], capture_output=True, text=True
        )
        assert key_id in listed.stdout
        assert token.split("_", 2)[2] not in listed.stdout  # the secret is never shown
        revoked = subprocess.run(
            [*CLI, "keys", "revoke", key_id, "--home", str(server.home)],
            capture_output=True,
            text=True,
        )
        assert revoked.returncode == 0, revoked.stderr
        assert client.get("/api/backfill/jobs").status_code == 401


def test_a_key_over_its_request_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    with running_server(tmp_path, "--requests-per-second", "0.5") as server:
        client = server.client(create_key(server.home, "read"))
        answers = [client.get("/api/backfill/jobs") for _ in range(40)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].headers["RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            ("path: dids.txt", "path: ../../../etc/passwd.txt"),
            ["body", "backfill", "source", "path"],
        ),
        (("path: out}", "path: /tmp/elsewhere}"), ["body", "backfill", "storage", "path"]),
        (("allow_private_addresses: true", "allow_private_addresses: false"), None),
        (
            ("requests_per_second: 20", "requests_per_second: 500"),
            ["body", "backfill", "processing", "requests_per_second"],
        ),
    ],
)
def test_unsafe_configs_are_refused_with_422_naming_the_field(
    tmp_path: Path, change: tuple[str, str], field: list[str] | None
) -> None:
    with running_server(tmp_path) as server:
        writer = server.client(create_key(server.home, "write"))
        text = api_job("http://169.254.169.254").replace(*change)
        answer = writer.post("/api/backfill/start", json={"config_yaml": text})
    assert answer.status_code == 422, answer.text
    locations = [problem["loc"] for problem in answer.json()["detail"]]
    if field is not None:
        assert field in locations, locations
    assert any(loc[-2:] == ["identity", "plc_url"] for loc in locations) or field is not None


def test_a_symlink_out_of_the_data_root_and_a_writing_query_are_refused(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        (server.root / "escape").symlink_to(tmp_path.parent)
        writer = server.client(create_key(server.home, "write"))
        base = api_job("https://93.184.216.34").replace(
            "network: {allow_private_addresses: true}", "network: {}"
        )
        linked = base.replace("path: dids.txt", "path: escape/dids.txt")
        writing = base.replace(
            "{type: file, path: dids.txt}", "{type: sqlite, path: d.db, query: 'DELETE FROM dids'}"
        )
        answers = [
            writer.post("/api/backfill/start", json={"config_yaml": text})
            for text in (linked, writing)
        ]
    assert [a.status_code for a in answers] == [422, 422]
    (symlink,) = answers[0].json()["detail"]
    assert symlink["loc"] == ["body", "backfill", "source", "path"]
    assert "data root" in symlink["msg"]
    (query,) = answers[1].json()["detail"]
    assert query["loc"] == ["body", "backfill", "source", "query"]
    assert "one SELECT" in query["msg"]


def test_the_openapi_document_lists_the_routes(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        spec = httpx.get(f"{server.url}/openapi.json").json()
        docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200
    assert {
        "/api/backfill/start",
        "/api/backfill/status/{job_id}",
        "/api/backfill/jobs",
        "/api/backfill/jobs/{job_id}",
        "/api/backfill/configs",
        "/healthz",
        "/metrics",
    } <= set(spec["paths"])
