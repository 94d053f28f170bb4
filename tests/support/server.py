"""The API server as a child process on loopback (``bsky-backfill serve``), with keys."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port
from tests.support.jobs import CLI

__all__ = ["Server", "create_key", "running_server", "wait_for"]


@dataclass(frozen=True)
class Server:
    """A running server: its base URL, home folder and data root."""

    url: str
    home: Path
    root: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        """A client sending ``token`` as its bearer key; closed when the server stops."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.clients.append(httpx.Client(base_url=self.url, headers=headers, timeout=30))
        return self.clients[-1]


def create_key(home: Path, scope: str) -> str:
    """A new key's token, made with ``bsky-backfill keys create`` (its last line)."""
    done = subprocess.run(
        [*CLI, "keys", "create", "--scope", scope, "--home", str(home)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"keys create failed: {done.stderr}"
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def running_server(folder: Path, *options: str) -> Iterator[Server]:
    """``bsky-backfill serve`` with home ``folder/home`` and data root ``folder/data``."""
    home, root = folder / "home", folder / "data"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [*CLI, "serve", "--home", str(home), "--data-root", str(root), "--port", str(port)]
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen([*command, *options], stdout=log, stderr=log)
    server = Server(f"http://127.0.0.1:{port}", home, root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((folder / "server.log").read_text()[-2000:])
            time.sleep(0.1)
        yield server
    finally:
        for client in server.clients:
            client.close()
        process.terminate()
        process.wait(30)
        log.close()


def wait_for(client: httpx.Client, job_id: str, states: set[str], timeout: float = 120) -> Any:
    """The job's status once its state is one of ``states`` (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/backfill/status/{job_id}").json()
        if status["state"] in states or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
