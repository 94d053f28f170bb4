"""Harness for the real reference PDS and PLC directory, run on loopback by node.

Three parts, each usable on its own:

- :func:`ensure_installed` copies the read-only kit (``shared/realpds``) into a cache
  directory keyed by the hash of its files and runs ``npm ci`` there once, under a file
  lock so that parallel pytest processes do not install at the same time.
- :class:`RealNetwork` starts ``node start-network.js`` as a child process, waits for its
  one JSON "ready" line and stops it with SIGTERM (then SIGKILL).
- :class:`PdsClient` is a small synchronous XRPC client (stdlib ``urllib``) for what the
  tests need: accounts, record writes, account states, getRepo, listRecords, DID docs.

Nothing here touches the internet: the servers bind 127.0.0.1, and ``npm ci`` is the
only step that talks to a registry (once per kit version).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tests.support import require, shared_dir

__all__ = [
    "INSTALL_TIMEOUT_S",
    "KIT_FILES",
    "Account",
    "PdsCallError",
    "PdsClient",
    "RateLimitSettings",
    "RealNetwork",
    "RepoSnapshot",
    "WrittenRecord",
    "ensure_installed",
    "install_dir",
    "is_installed",
    "kit_dir",
    "kit_hash",
    "node_available",
    "signing_method",
]

#: Files copied from the kit; all of them feed the cache key.
KIT_FILES = ("package.json", "package-lock.json", "start-network.js")
#: Longest ``npm ci`` allowed (it compiles better-sqlite3 when no prebuilt binary loads).
INSTALL_TIMEOUT_S = 900.0
_MARKER = ".realpds-installed"
_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_HTTP_TIMEOUT_S = 30.0
_APPLY_WRITES_MAX = 200
_LIST_LIMIT = 100


# --------------------------------------------------------------------------- install


def kit_dir() -> Path:
    """The read-only kit: ``shared/realpds`` (package.json, lock file, start-network.js)."""
    return shared_dir() / "realpds"


def kit_hash(kit: Path | None = None) -> str:
    """sha256 over the kit's files (name and content), hex; changes when any of them does."""
    kit = kit or kit_dir()
    digest = hashlib.sha256()
    for name in KIT_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((kit / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def install_dir(kit: Path | None = None) -> Path:
    """Where the kit is installed: ``$BSKY_BACKFILL_REALPDS_DIR`` or a hash-keyed cache dir."""
    override = os.environ.get("BSKY_BACKFILL_REALPDS_DIR")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "bsky-backfill" / f"realpds-{kit_hash(kit)[:12]}"


def node_available() -> bool:
    """True when both ``node`` and ``npm`` are on PATH."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def is_installed(kit: Path | None = None) -> bool:
    """True when this kit version is already installed (no ``npm ci`` needed)."""
    kit = kit or kit_dir()
    try:
        return _installed(install_dir(kit) / _MARKER, kit)
    except OSError:  # the kit itself is missing
        return False


def ensure_installed(kit: Path | None = None, *, timeout: float = INSTALL_TIMEOUT_S) -> Path:
    """Install the kit once (``npm ci``) and return the directory holding it.

    Skips the calling test (fails it under CI) when the kit, node or npm is missing.
    Idempotent: a marker file written after a successful ``npm ci`` makes later calls
    return at once. An ``fcntl`` lock serialises concurrent installs of the same dir.
    Raises ``RuntimeError`` (with the tail of npm's log) when ``npm ci`` fails.
    """
    kit = kit or kit_dir()
    require(all((kit / name).is_file() for name in KIT_FILES), f"real PDS kit at {kit}")
    require(node_available(), "node and npm on PATH (to run the real reference PDS)")
    target = install_dir(kit)
    marker = target / _MARKER
    if _installed(marker, kit):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f"{target.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _installed(marker, kit):  # another process may have finished meanwhile
                _install(kit, target, timeout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _installed(marker: Path, kit: Path) -> bool:
    """True when ``marker`` records a finished install of this very kit."""
    try:
        return marker.read_text().strip() == kit_hash(kit)
    except OSError:
        return False


def _install(kit: Path, target: Path, timeout: float) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / _MARKER).unlink(missing_ok=True)
    for name in KIT_FILES:
        shutil.copyfile(kit / name, target / name)
    log_path = target / "npm-ci.log"
    with log_path.open("wb") as log:
        try:
            proc = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=target,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"npm ci in {target} took over {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"npm ci in {target} failed (exit {proc.returncode}):\n{_tail(log_path)}"
        )
    (target / _MARKER).write_text(kit_hash(kit) + "\n")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- network


@dataclass(frozen=True)
class RateLimitSettings:
    """Turn the PDS's per-IP rate limits on, shrunk so tests can reach a 429 quickly.

    ``points`` requests per ``window_ms`` for the global per-IP bucket (which on PDS 0.4.x
    also counts ``sync.getRepo``).
    """

    points: int = 20
    window_ms: int = 10_000

    def env(self) -> dict[str, str]:
        """The environment variables ``start-network.js`` reads for these limits."""
        return {
            "PDS_RATE_LIMITS_ENABLED": "true",
            "REALPDS_GLOBAL_RATE_LIMIT": str(self.points),
            "REALPDS_GLOBAL_RATE_LIMIT_WINDOW_MS": str(self.window_ms),
        }


# Inherited variables that would silently change the network the harness starts.
_SCRUBBED_PREFIXES = ("PDS_", "PLC_", "REALPDS_")


class RealNetwork:
    """One real PLC directory + PDS on loopback, run by ``node start-network.js``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The child watches its
    stdin (``REALPDS_WATCH_STDIN=1``), so it exits (and deletes its data) when this process
    dies. Its stderr, and anything on stdout after the ready line, goes to :attr:`log_path`.
    """

    def __init__(
        self,
        install: Path,
        *,
        rate_limits: RateLimitSettings | None = None,
        extra_env: Mapping[str, str] | None = None,
        ready_timeout: float = _READY_TIMEOUT_S,
    ) -> None:
        self.install = install
        self.rate_limits = rate_limits
        self.extra_env = dict(extra_env or {})
        self.ready_timeout = ready_timeout
        self.info: dict[str, Any] = {}
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log: IO[bytes] | None = None
        self._drain: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> Self:
        """Start the child and wait for its ready line.

        Raises ``RuntimeError`` (with the log tail) if it exits or stays silent for
        ``ready_timeout`` seconds; the child is stopped first.
        """
        if self._proc is not None:
            raise RuntimeError("network already started")
        t0 = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix="bsky-backfill-realpds-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        # No PDS_DATA_DIRECTORY: the script then makes its own and deletes it on every
        # clean exit, including the one it takes when our end of its stdin closes.
        env["REALPDS_WATCH_STDIN"] = "1"
        if self.rate_limits is not None:
            env.update(self.rate_limits.env())
        env.update(self.extra_env)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            ["node", "start-network.js"],
            cwd=self.install,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,  # a ^C in the terminal reaches pytest, not node
        )
        lines: queue.Queue[bytes] = queue.Queue()
        self._drain = threading.Thread(
            target=_drain_stdout, args=(self._proc, lines, self._log), daemon=True
        )
        self._drain.start()
        try:
            line = lines.get(timeout=self.ready_timeout)
        except queue.Empty:
            line = b""
        try:
            self.info = json.loads(line) if line else {}
        except ValueError:
            self.info = {}
        if not self.info.get("pds"):
            code = self._proc.poll()
            self.stop()  # keeps the log: the child failed
            state = f"exited with {code}" if code is not None else "stayed silent"
            raise RuntimeError(
                f"real PDS network {state} (ready line {line[:200]!r});"
                f" log {self.log_path}:\n{_tail(self.log_path)}"
            )
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """SIGTERM the child, wait, SIGKILL on timeout; remove its data. Idempotent.

        The work directory (the log) is removed after a clean run; when the child died
        by itself or was never ready, the log is kept for a post-mortem.
        """
        proc, self._proc = self._proc, None
        failed = not self.info.get("pds")
        if proc is not None:
            failed = failed or proc.poll() is not None
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=_STOP_TIMEOUT_S)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if self._drain is not None:
                self._drain.join(timeout=_STOP_TIMEOUT_S)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        data_dir = self.info.get("dataDir")
        if isinstance(data_dir, str) and Path(data_dir).name.startswith("realpds-"):
            shutil.rmtree(data_dir, ignore_errors=True)  # left behind only after a SIGKILL
        if self._workdir is not None and not failed:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests use

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The child's stderr log (kept after :meth:`stop` only when the child failed)."""
        if self._workdir is None:
            raise RuntimeError("network not started")
        return self._workdir / "network.log"

    @property
    def plc_url(self) -> str:
        """Base URL of the PLC directory, e.g. ``http://localhost:PORT``."""
        return str(self.info["plc"])

    @property
    def pds_url(self) -> str:
        """Base URL of the PDS (also its ``#atproto_pds`` endpoint in DID documents)."""
        return str(self.info["pds"])

    @property
    def admin_password(self) -> str:
        """The PDS admin password (Basic auth ``admin:<password>``)."""
        return str(self.info["adminPassword"])

    def client(self) -> PdsClient:
        """A :class:`PdsClient` for this network."""
        return PdsClient(self.pds_url, self.plc_url, self.admin_password)


def _drain_stdout(proc: subprocess.Popen[bytes], lines: queue.Queue[bytes], log: IO[bytes]) -> None:
    """Hand the ready line to ``lines``; copy every other stdout line to the log.

    The ready line is the first JSON object with a ``pds`` key (with ``LOG_ENABLED=true``
    the servers log to stdout too). Reading on keeps node from blocking on a full pipe.
    """
    assert proc.stdout is not None
    ready = False
    for line in proc.stdout:
        if not ready and _is_ready_line(line):
            lines.put(line)
            ready = True
            continue
        with contextlib.suppress(ValueError, OSError):  # log closed during shutdown
            log.write(line)
            log.flush()
    if not ready:
        lines.put(b"")  # EOF before the ready line: wake the waiter now, not at its timeout


def _is_ready_line(line: bytes) -> bool:
    try:
        info = json.loads(line)
    except ValueError:
        return False
    return isinstance(info, dict) and "pds" in info


# --------------------------------------------------------------------------- client


class PdsCallError(Exception):
    """An XRPC call answered with an HTTP error; ``error`` is the XRPC error name."""

    def __init__(
        self, nsid: str, status: int, error: str | None, message: str | None, headers: Any
    ) -> None:
        super().__init__(f"{nsid}: HTTP {status} {error}: {message}")
        self.nsid = nsid
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class Account:
    """An account created on the real PDS; ``jwt`` is its access token."""

    did: str
    handle: str
    jwt: str
    password: str
    email: str


@dataclass(frozen=True)
class WrittenRecord:
    """What a write returned: the record's AT-URI and CID."""

    uri: str
    cid: str

    @property
    def collection(self) -> str:
        """The collection NSID, from the URI."""
        return self.uri.split("/")[3]

    @property
    def rkey(self) -> str:
        """The record key, from the URI."""
        return self.uri.split("/")[4]


@dataclass
class PdsClient:
    """Synchronous XRPC calls against the real PDS and PLC (stdlib ``urllib``).

    Every method raises :class:`PdsCallError` on an HTTP error answer.
    """

    pds_url: str
    plc_url: str
    admin_password: str
    timeout: float = _HTTP_TIMEOUT_S
    _opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(urllib.request.ProxyHandler({})),
        repr=False,
    )

    # -- transport

    def _request(
        self,
        method: str,
        url: str,
        *,
        nsid: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"message": raw[:500].decode(errors="replace")}
            raise PdsCallError(
                nsid, exc.code, payload.get("error"), payload.get("message"), exc.headers
            ) from None

    def get(
        self, nsid: str, params: Mapping[str, Any] | None = None, *, auth: str | None = None
    ) -> bytes:
        """``GET /xrpc/<nsid>?params`` -> raw body."""
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = f"{self.pds_url}/xrpc/{nsid}" + (f"?{query}" if query else "")
        return self._request("GET", url, nsid=nsid, headers=_auth_header(auth))

    def get_json(
        self, nsid: str, params: Mapping[str, Any] | None = None, *, auth: str | None = None
    ) -> Any:
        """``GET /xrpc/<nsid>`` -> decoded JSON."""
        return json.loads(self.get(nsid, params, auth=auth))

    def post(self, nsid: str, body: Any, *, auth: str | None = None) -> Any:
        """``POST /xrpc/<nsid>`` with a JSON body -> decoded JSON (None if empty)."""
        raw = self._request(
            "POST", f"{self.pds_url}/xrpc/{nsid}", nsid=nsid, body=body, headers=_auth_header(auth)
        )
        return json.loads(raw) if raw.strip() else None

    def _admin(self) -> str:
        token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
        return f"Basic {token}"

    # -- accounts

    def create_account(self, name: str, *, password: str = "hunter2-password") -> Account:
        """``com.atproto.server.createAccount`` for handle ``<name>.test``."""
        handle = f"{name}.test"
        email = f"{name}@example.test"
        out = self.post(
            "com.atproto.server.createAccount",
            {"handle": handle, "email": email, "password": password},
        )
        return Account(out["did"], out["handle"], out["accessJwt"], password, email)

    def deactivate_account(self, account: Account) -> None:
        """``com.atproto.server.deactivateAccount``, as the account itself."""
        self.post("com.atproto.server.deactivateAccount", {}, auth=f"Bearer {account.jwt}")

    def takedown(self, did: str) -> None:
        """``com.atproto.admin.updateSubjectStatus`` with ``takedown.applied`` (admin)."""
        self.post(
            "com.atproto.admin.updateSubjectStatus",
            {
                "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
                "takedown": {"applied": True, "ref": "bsky-backfill-test"},
            },
            auth=self._admin(),
        )

    def delete_account(self, did: str) -> None:
        """``com.atproto.admin.deleteAccount`` (admin)."""
        self.post("com.atproto.admin.deleteAccount", {"did": did}, auth=self._admin())

    # -- writes

    def create_record(
        self, account: Account, collection: str, record: Mapping[str, Any], rkey: str | None = None
    ) -> WrittenRecord:
        """``com.atproto.repo.createRecord`` (``$type`` added when missing)."""
        body: dict[str, Any] = {
            "repo": account.did,
            "collection": collection,
            "record": {"$type": collection, **record},
        }
        if rkey is not None:
            body["rkey"] = rkey
        out = self.post("com.atproto.repo.createRecord", body, auth=f"Bearer {account.jwt}")
        return WrittenRecord(out["uri"], out["cid"])

    def put_record(
        self, account: Account, collection: str, rkey: str, record: Mapping[str, Any]
    ) -> WrittenRecord:
        """``com.atproto.repo.putRecord``: create or replace the record at ``rkey``."""
        out = self.post(
            "com.atproto.repo.putRecord",
            {
                "repo": account.did,
                "collection": collection,
                "rkey": rkey,
                "record": {"$type": collection, **record},
            },
            auth=f"Bearer {account.jwt}",
        )
        return WrittenRecord(out["uri"], out["cid"])

    def delete_record(self, account: Account, collection: str, rkey: str) -> None:
        """``com.atproto.repo.deleteRecord``."""
        self.post(
            "com.atproto.repo.deleteRecord",
            {"repo": account.did, "collection": collection, "rkey": rkey},
            auth=f"Bearer {account.jwt}",
        )

    def apply_creates(
        self,
        account: Account,
        creates: Iterable[tuple[str, str | None, Mapping[str, Any]]],
    ) -> list[WrittenRecord]:
        """Create many records via ``applyWrites``, 200 per call, in order.

        ``creates`` yields ``(collection, rkey or None, record)``; returns one
        :class:`WrittenRecord` per create, in the same order.
        """
        written: list[WrittenRecord] = []
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            if not batch:
                return
            out = self.post(
                "com.atproto.repo.applyWrites",
                {"repo": account.did, "writes": batch},
                auth=f"Bearer {account.jwt}",
            )
            written.extend(WrittenRecord(r["uri"], r["cid"]) for r in out["results"])
            batch.clear()

        for collection, rkey, record in creates:
            write: dict[str, Any] = {
                "$type": "com.atproto.repo.applyWrites#create",
                "collection": collection,
                "value": {"$type": collection, **record},
            }
            if rkey is not None:
                write["rkey"] = rkey
            batch.append(write)
            if len(batch) == _APPLY_WRITES_MAX:
                flush()
        flush()
        return written

    # -- reads

    def get_repo(self, did: str, *, since: str | None = None) -> bytes:
        """``com.atproto.sync.getRepo`` -> the raw CAR bytes."""
        return self.get("com.atproto.sync.getRepo", {"did": did, "since": since})

    def latest_commit(self, did: str) -> tuple[str, str]:
        """``com.atproto.sync.getLatestCommit`` -> ``(cid, rev)``."""
        out = self.get_json("com.atproto.sync.getLatestCommit", {"did": did})
        return out["cid"], out["rev"]

    def collections(self, did: str) -> list[str]:
        """``com.atproto.repo.describeRepo`` -> the repo's collections."""
        return list(self.get_json("com.atproto.repo.describeRepo", {"repo": did})["collections"])

    def list_records(self, did: str, collection: str) -> Iterator[dict[str, Any]]:
        """Every record of one collection (``listRecords``, paged 100 at a time by cursor)."""
        cursor: str | None = None
        while True:
            page = self.get_json(
                "com.atproto.repo.listRecords",
                {"repo": did, "collection": collection, "limit": _LIST_LIMIT, "cursor": cursor},
            )
            yield from page["records"]
            cursor = page.get("cursor")
            if not cursor or not page["records"]:
                return

    def all_records(self, did: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Every record of the repo, ``{(collection, rkey): {"uri", "cid", "value"}}``."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for collection in self.collections(did):
            for rec in self.list_records(did, collection):
                out[(collection, rec["uri"].rsplit("/", 1)[1])] = rec
        return out

    def record_set(self, did: str) -> set[tuple[str, str, str]]:
        """``{(collection, rkey, cid)}`` of every record, from listRecords."""
        return {(c, k, rec["cid"]) for (c, k), rec in self.all_records(did).items()}

    def get_record(self, did: str, collection: str, rkey: str) -> dict[str, Any]:
        """``com.atproto.repo.getRecord`` -> ``{"uri", "cid", "value"}``."""
        out: dict[str, Any] = self.get_json(
            "com.atproto.repo.getRecord", {"repo": did, "collection": collection, "rkey": rkey}
        )
        return out

    def did_document(self, did: str) -> dict[str, Any]:
        """``GET {plc}/{did}`` -> the DID document."""
        raw = self._request("GET", f"{self.plc_url}/{did}", nsid="plc")
        doc: dict[str, Any] = json.loads(raw)
        return doc


def _auth_header(auth: str | None) -> dict[str, str]:
    return {"Authorization": auth} if auth else {}


def signing_method(doc: Mapping[str, Any]) -> tuple[str, str]:
    """The ``#atproto`` verification method of a DID document: ``(type, publicKeyMultibase)``.

    The PLC directory in the kit may give the legacy form (type
    ``EcdsaSecp256k1VerificationKey2019``, bare key) instead of ``Multikey``.
    """
    methods: Sequence[Mapping[str, Any]] = doc.get("verificationMethod", [])
    for method in methods:
        if str(method.get("id", "")).endswith("#atproto"):
            return str(method["type"]), str(method["publicKeyMultibase"])
    raise LookupError(f"no #atproto verification method in {doc.get('id')}")


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class RepoSnapshot:
    """An account on the real PDS and what the server says its repo holds.

    ``records`` maps ``(collection, rkey)`` to listRecords's ``{"uri", "cid", "value"}``
    (JSON form: links as ``{"$link"}``, bytes as ``{"$bytes"}``); ``car`` is getRepo's
    export and ``commit_cid`` / ``rev`` come from getLatestCommit, all taken after the
    last write. ``deleted`` and ``updated`` name the keys the population deleted or
    rewrote with putRecord.
    """

    account: Account
    key_type: str
    key_multibase: str
    records: Mapping[tuple[str, str], Mapping[str, Any]]
    car: bytes
    commit_cid: str
    rev: str
    deleted: frozenset[tuple[str, str]] = frozenset()
    updated: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def take(
        cls,
        client: PdsClient,
        account: Account,
        *,
        deleted: Iterable[tuple[str, str]] = (),
        updated: Iterable[tuple[str, str]] = (),
    ) -> RepoSnapshot:
        """Read the account's DID doc, records, CAR and latest commit from the servers."""
        key_type, key_multibase = signing_method(client.did_document(account.did))
        commit_cid, rev = client.latest_commit(account.did)
        return cls(
            account=account,
            key_type=key_type,
            key_multibase=key_multibase,
            records=client.all_records(account.did),
            car=client.get_repo(account.did),
            commit_cid=commit_cid,
            rev=rev,
            deleted=frozenset(deleted),
            updated=frozenset(updated),
        )

    @property
    def did(self) -> str:
        """The account's DID."""
        return self.account.did

    @property
    def handle(self) -> str:
        """The account's handle (``<name>.test``)."""
        return self.account.handle

    @property
    def expected(self) -> set[tuple[str, str, str]]:
        """``{(collection, rkey, cid)}`` per listRecords."""
        return {(c, k, str(rec["cid"])) for (c, k), rec in self.records.items()}

    def signing_key(self) -> str:
        """The account's signing key as a ``did:key:z...`` string.

        Converts the PLC directory's legacy form with the project's own
        ``parse_legacy_key`` (imported here, so this module loads without it).
        """
        if self.key_type == "Multikey":
            return f"did:key:{self.key_multibase}"
        from bsky_backfill.atproto.crypto import parse_legacy_key

        return str(parse_legacy_key(self.key_type, self.key_multibase).did_key)
