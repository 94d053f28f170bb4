"""The ``bsky-backfill`` command line.

Every command turns a ``BackfillError`` into one clear line on stderr and an exit code:
0 done, 1 failed, 2 bad input or usage.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bsky_backfill import __version__
from bsky_backfill.api.limits import ApiLimits
from bsky_backfill.atproto.cbor import to_json
from bsky_backfill.atproto.repo import read_repo
from bsky_backfill.errors import BackfillError, ConfigError
from bsky_backfill.observability.logs import LOG_LEVELS, configure_logging
from bsky_backfill.process import tune_process

_T = TypeVar("_T")

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from bsky_backfill.api.app import ClusterSettings
    from bsky_backfill.api.keys import KeyStore
    from bsky_backfill.core.job import JobOutcome
    from bsky_backfill.core.manager import Progress
    from bsky_backfill.fakenet.spec import NetworkSpec

__all__ = [
    "app",
    "cancel",
    "demo",
    "dispatch",
    "fakenet",
    "inspect",
    "jobs",
    "keys_create",
    "keys_list",
    "keys_revoke",
    "main",
    "migrate_config",
    "run",
    "serve",
    "status",
    "validate",
    "worker",
]

app = typer.Typer(
    name="bsky-backfill",
    help="Backfill AT Protocol (Bluesky) repository records: exact, verified, resumable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bsky-backfill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Backfill AT Protocol repository records for a chosen set of accounts."""


@app.command()
def inspect(
    car: Annotated[Path, typer.Argument(help="A repo export (CAR file from getRepo).")],
    key: Annotated[
        str | None,
        typer.Option(help="Signing key (did:key:z... or z...) to verify the commit signature."),
    ] = None,
    did: Annotated[str | None, typer.Option(help="Require the repo to belong to this DID.")] = None,
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Only this collection (repeatable)."),
    ] = None,
    verify: Annotated[
        str, typer.Option(help="full (needs --key) | hashes | none. Default: full with --key.")
    ] = "",
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Print each record as one JSON line instead.")
    ] = False,
) -> None:
    """Read and verify one repo export, and summarise its records.

    Example: bsky-backfill inspect repo.car --key did:key:zQ3sh... -c app.bsky.feed.post
    """
    level = verify or ("full" if key else "hashes")
    if level not in ("full", "hashes", "none"):
        _fail(f"--verify must be full, hashes or none, not {level!r}", code=2)
    if level == "full" and key is None:
        _fail("--verify full needs --key (the #atproto key from the DID document)", code=2)
    if not car.is_file():
        _fail(f"no such file: {car}", code=2)
    with read_repo(car, signing_key=key, did=did, collections=collection, verify=level) as repo:
        if jsonl:
            for record in repo.records:
                line = {"uri": record.uri(repo.did), "cid": record.cid, "value": record.value}
                sys.stdout.write(to_json(line) + "\n")
            return
        counts = Counter(record.collection for record in repo.records)
    console = Console(emoji=False)
    console.print(f"[bold]{repo.did}[/bold] rev {repo.rev} commit {repo.commit_cid}")
    console.print(f"verified: {level}; {repo.size} bytes in {repo.block_count} blocks")
    console.print(_collection_table(counts))


def _collection_table(counts: Counter[str]) -> Table:
    table = Table("collection", "records")
    for name, count in sorted(counts.items()):
        table.add_row(name, str(count))
    table.add_row("[bold]total[/bold]", f"[bold]{sum(counts.values())}[/bold]")
    return table


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for the demo's config, DID list and dataset.")
    ] = Path("bsky-backfill-demo"),
    accounts: Annotated[int, typer.Option(min=10, max=100_000, help="Simulated accounts.")] = 300,
    hosts: Annotated[int, typer.Option(min=1, max=200, help="Simulated PDS hosts.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the simulated network.")] = 1,
) -> None:
    """Run a real job against the built-in simulated network and check it is exact.

    Starts fakenet in-process (with faults), backfills every account to Parquet, and
    compares the dataset with the network's ground truth. Offline; about a minute.
    Example: bsky-backfill demo --accounts 500 --out /tmp/demo
    """
    from bsky_backfill.demo import run_demo

    exact = asyncio.run(
        run_demo(Console(emoji=False), out=out, accounts=accounts, hosts=hosts, seed=seed)
    )
    raise typer.Exit(0 if exact else 1)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="The job's YAML config.")],
    distributed: Annotated[
        bool, typer.Option(help="Send the work to Celery workers (bsky-backfill worker).")
    ] = False,
    broker: _BROKER = None,
    queue: _QUEUE = "bsky-backfill",
    visibility_timeout: _VISIBILITY = 600.0,
) -> None:
    """Run a backfill job (or resume it: the job is the config's name).

    Exit 0 when done (unavailable accounts included), 1 if the job failed or was
    cancelled, 2 for a bad config. With --distributed, Celery workers (bsky-backfill
    worker) do the fetching. Example: bsky-backfill run configs/default.yaml
    """
    from bsky_backfill.config import load_config
    from bsky_backfill.core.job import job_metrics, run_job
    from bsky_backfill.demo import run_with_progress
    from bsky_backfill.observability.exporter import metrics_server
    from bsky_backfill.observability.logs import configure_logging

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        _print_problems(exc)
        raise typer.Exit(2) from None
    configure_logging(loaded.monitoring.log_level)
    console = Console(emoji=False)
    text = config.read_text(encoding="utf-8")
    metrics = job_metrics(loaded)

    def start(on_progress: Callable[[Progress], None]) -> Awaitable[JobOutcome]:
        return run_job(loaded, text, on_progress=on_progress, metrics=metrics)

    if distributed:
        from bsky_backfill.distributed.app import BrokerSettings, broker_url, celery_app
        from bsky_backfill.distributed.coordinator import run_distributed

        celery = celery_app(BrokerSettings(broker_url(broker), queue, visibility_timeout))
        base_dir = config.resolve().parent

        def start(on_progress: Callable[[Progress], None]) -> Awaitable[JobOutcome]:
            return run_distributed(
                loaded, text, celery, base_dir=base_dir, on_progress=on_progress, metrics=metrics
            )

    with metrics_server(metrics.registry, loaded.monitoring):
        outcome = asyncio.run(run_with_progress(console, loaded, text, total=0, start=start))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(outcome.counts.items()))
    console.print(f"job {outcome.job_id}: {counts}; {outcome.records:,} records")
    console.print(f"dataset: {outcome.output} (manifest.json written last)")


@app.command()
def dispatch(
    config: Annotated[Path, typer.Argument(help="The dispatch's YAML config (dispatch:).")],
) -> None:
    """Send a dataset's records to downstream integrations (webhook, Redis stream).

    Each integration gets every selected record once: a run sends only what it has not
    acknowledged, so running again resumes (after kill -9, at most the batch in flight
    is sent twice; receivers dedupe by uri + cid). Exit 0 when every integration is
    done, 1 if one failed, 2 for a bad config.
    Example: bsky-backfill dispatch configs/examples/dispatch.yaml
    """
    from bsky_backfill.dispatch import DispatchMetrics, load_dispatch_config, run_dispatch
    from bsky_backfill.observability.exporter import metrics_server

    try:
        loaded = load_dispatch_config(config)
    except ConfigError as exc:
        _print_problems(exc)
        raise typer.Exit(2) from None
    configure_logging(loaded.monitoring.log_level)
    console = Console(emoji=False)
    metrics = DispatchMetrics(loaded.name)
    with (
        metrics_server(metrics.registry, loaded.monitoring.exporter()),
        console.status("dispatching") as shown,
    ):
        sent: dict[str, int] = {}

        def progress(integration: str, count: int) -> None:
            sent[integration] = count
            shown.update(", ".join(f"{name}: {n:,} sent" for name, n in sent.items()))

        outcome = asyncio.run(run_dispatch(loaded, metrics=metrics, on_progress=progress))
    for item in outcome.integrations:
        line = (
            f"{item.name}: {item.sent:,} sent in {item.batches} batches, {item.skipped:,} "
            f"already acknowledged, {item.resent:,} resent after a crash; "
            f"{item.acknowledged:,} acknowledged in all"
        )
        console.print(
            line + (f"; failed: {item.error}" if item.error else ""),
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"dispatch {outcome.dispatch}: {len(outcome.integrations) - len(outcome.failed)} of "
        f"{len(outcome.integrations)} integrations done in {outcome.elapsed_seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1 if outcome.failed else 0)


def _state_files(where: list[Path]) -> list[tuple[str | Path, str | None]]:
    """Job stores (target, PostgreSQL schema): databases named directly, beside a config's
    dataset (or its shared store, for a distributed job), or found below ``.``."""
    from bsky_backfill.config import load_config
    from bsky_backfill.core.job import store_location

    found: list[tuple[str | Path, str | None]] = []
    for item in where or [Path()]:
        if item.suffix in (".yaml", ".yml"):
            target, options = store_location(load_config(item))
            found.append((target, options.schema))
        elif item.is_dir():
            found.extend((path, None) for path in sorted(item.glob("**/_state/jobs.sqlite")))
        else:
            found.append((item, None))
    return [(t, schema) for t, schema in found if not isinstance(t, Path) or t.is_file()]


async def _job_rows(
    stores: list[tuple[str | Path, str | None]], job_id: str | None
) -> list[tuple[str, str, str, str]]:
    from bsky_backfill.state.sql.engine import StoreOptions
    from bsky_backfill.state.sql.store import SqlJobStore

    rows = []
    for target, schema in stores:
        async with await SqlJobStore.open(target, StoreOptions(schema=schema)) as store:
            for job in await store.list_jobs():
                if job_id is not None and job.job_id != job_id:
                    continue
                counts = await store.counts(job.job_id)
                done = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
                shown = target if isinstance(target, Path) else _without_password(target)
                rows.append((job.job_id, job.state.value, done, str(shown)))
    return rows


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def jobs(
    where: Annotated[
        list[Path] | None,
        typer.Argument(help="Configs, state databases or folders to search (default: .)."),
    ] = None,
) -> None:
    """List jobs with their state and DIDs by state.

    Example: bsky-backfill jobs configs/default.yaml
    """
    rows = asyncio.run(_job_rows(_state_files(where or []), None))
    table = Table("job", "state", "DIDs", "state database")
    for row in rows:
        table.add_row(*row)
    Console(emoji=False).print(table if rows else "no jobs found")


@app.command()
def status(
    job: Annotated[str, typer.Argument(help="A job id (its config's name) or its config.")],
    where: Annotated[
        list[Path] | None, typer.Option("--state", help="State database or folder to search.")
    ] = None,
) -> None:
    """Show one job: its state, DIDs by state, and per-host progress.

    Example: bsky-backfill status configs/default.yaml
    """
    if job.endswith((".yaml", ".yml")):
        from bsky_backfill.config import load_config

        where = [Path(job)]
        job = load_config(Path(job)).name
    rows = asyncio.run(_job_rows(_state_files(where or []), job))
    if not rows:
        _fail(f"no job {job!r} found (give its config, or --state with its database)", code=1)
    for job_id, state, done, path in rows:
        Console(emoji=False).print(f"[bold]{job_id}[/bold]: {state}; {done or 'no DIDs'} ({path})")


@app.command()
def fakenet(
    hosts: Annotated[int, typer.Option(min=1, help="PDS hosts, each on its own port.")] = 4,
    accounts: Annotated[int, typer.Option(min=0, help="Accounts across the hosts.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same DIDs and repos.")] = 0,
    rate_limit_scale: Annotated[
        float,
        typer.Option(
            min=0.0001, help="Multiply every host's rate limits (0.01: 30 calls per 5 min)."
        ),
    ] = 1.0,
    rate_window: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds per rate-limit window (default: the PDS's 300)."),
    ] = None,
) -> None:
    """Run the simulated network (PLC directory + PDS hosts) on 127.0.0.1 until SIGTERM.

    When ready it prints one JSON line, {"plc": URL, "hosts": [URL, ...]}; the control API
    is under {plc}/_fakenet/. Example: bsky-backfill fakenet --hosts 10 --accounts 5000
    """
    from dataclasses import replace

    from bsky_backfill.fakenet.population import PopulationSpec
    from bsky_backfill.fakenet.spec import HostSpec, NetworkSpec

    host = HostSpec().scaled(rate_limit_scale)
    if rate_window is not None:
        host = replace(host, global_window_s=rate_window, getrepo_window_s=rate_window)
    spec = NetworkSpec(PopulationSpec(seed=seed, accounts=accounts, hosts=hosts), hosts=host)
    asyncio.run(_serve_fakenet(spec))


async def _serve_fakenet(spec: NetworkSpec) -> None:
    """Serve ``spec`` until SIGTERM or SIGINT, announcing the URLs on stdout."""
    from bsky_backfill.fakenet.server import FakeNetwork

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with FakeNetwork(spec) as network:
        sys.stdout.write(json.dumps({"plc": network.plc_url, "hosts": network.host_urls}) + "\n")
        sys.stdout.flush()
        await stop.wait()


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="The config file (YAML).")],
) -> None:
    """Check a config: print a summary of it, normalised, or every problem found.

    Exit 0 when it is valid; 2 when not, with one line per problem on stderr:
    CONFIG:LINE: key.path: what is wrong and how to fix it.
    Example: bsky-backfill validate configs/default.yaml
    """
    from bsky_backfill.config import load_config
    from bsky_backfill.config.summary import missing_inputs, summarize

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        _print_problems(exc)
        raise typer.Exit(2) from None
    typer.echo(f"{config}: valid")
    for line in summarize(loaded):
        typer.echo(line)
    for missing in missing_inputs(loaded):
        typer.echo(f"note: {missing} does not exist (yet)")


@app.command("migrate-config")
def migrate_config(
    old: Annotated[Path, typer.Argument(help="A config in the legacy (pre-consolidation) form.")],
    project_home: Annotated[
        Path | None,
        typer.Option(help="Folder the legacy relative paths were relative to; made absolute."),
    ] = None,
) -> None:
    """Convert a legacy config to the current form and print it, notes as comments.

    The result is validated first; problems are reported against the legacy file (exit 2).
    Example: bsky-backfill migrate-config old/backfill_study_users.yaml > study_users.yaml
    """
    from bsky_backfill.config import migrate_config as migrate

    try:
        migration = migrate(old, project_home=project_home)
    except ConfigError as exc:
        _print_problems(exc)
        raise typer.Exit(2) from None
    sys.stdout.write(migration.text)


_BROKER = Annotated[
    str | None,
    typer.Option(help="Celery broker URL (default: $BSKY_BACKFILL_BROKER or local Redis)."),
]
_QUEUE = Annotated[str, typer.Option(help="Celery queue the job's tasks go to.")]


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(LOG_LEVELS)}")
    return value.upper()


_LOG_LEVEL = Annotated[
    str, typer.Option(callback=_log_level, help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
]
_VISIBILITY = Annotated[
    float,
    typer.Option(
        min=1.0, help="Seconds before a killed worker's task is handed out again (> longest task)."
    ),
]


@app.command()
def worker(
    broker: _BROKER = None,
    queue: _QUEUE = "bsky-backfill",
    visibility_timeout: _VISIBILITY = 600.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks run at once.")] = 2,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo or threads.")] = "prefork",
    egress_id: Annotated[
        str | None,
        typer.Option(help="This machine's egress IP id (for rate_limit_scope: egress_ip)."),
    ] = None,
    log_level: _LOG_LEVEL = "INFO",
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Serve this worker's /metrics here (0: off; pool solo/threads)."
        ),
    ] = 0,
    metrics_address: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run a Celery worker for distributed jobs (run --distributed, or serve --broker).

    Example: bsky-backfill worker --broker redis://queue-host:6379/0 --concurrency 4
    """
    import os

    from prometheus_client import start_http_server

    from bsky_backfill.distributed.app import BrokerSettings, broker_url, celery_app
    from bsky_backfill.distributed.tasks import EGRESS_ENV
    from bsky_backfill.observability.metrics import JobsMetrics

    if pool not in ("prefork", "solo", "threads"):
        _fail(f"--pool {pool!r}: choose prefork, solo or threads", code=2)
    configure_logging(log_level)
    if metrics_port and pool == "prefork":
        _fail(
            "--metrics-port needs --pool threads or solo: prefork runs tasks in child "
            "processes whose figures one port cannot serve",
            code=2,
        )
    if egress_id:
        os.environ[EGRESS_ENV] = egress_id
    jobs = JobsMetrics()
    celery = celery_app(BrokerSettings(broker_url(broker), queue, visibility_timeout), jobs)
    if metrics_port:
        try:
            start_http_server(metrics_port, addr=metrics_address, registry=jobs.registry)
        except OSError as exc:
            _fail(f"--metrics-port {metrics_port}: {exc}; choose a free port", code=2)
    celery.worker_main(
        [
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--queues={queue}",
            f"--loglevel={log_level}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def cancel(
    config: Annotated[Path, typer.Argument(help="The distributed job's YAML config.")],
) -> None:
    """Cancel a distributed job: every worker stops within seconds; run it again to resume.

    (A job run with plain `run` stops with Ctrl-C; one run by the server, with DELETE
    /api/backfill/jobs/ID.) Example: bsky-backfill cancel study.yaml
    """
    from bsky_backfill.config import load_config
    from bsky_backfill.distributed.control import CancelFlags

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        _print_problems(exc)
        raise typer.Exit(2) from None
    spec = loaded.distributed

    async def raise_flag() -> None:
        async with CancelFlags.open(spec.redis_url, spec.key_prefix) as flags:
            await flags.cancel(loaded.name)

    asyncio.run(raise_flag())
    typer.echo(f"job {loaded.name}: cancel requested; its workers stop within seconds")


def _cluster(
    broker: str | None,
    queue: str,
    visibility_timeout: float,
    state_url: str | None,
    state_schema: str | None,
) -> ClusterSettings | None:
    """``serve``'s Celery settings, or None to run jobs in the server."""
    from pydantic import ValidationError

    from bsky_backfill.api.app import ClusterSettings
    from bsky_backfill.config.schema import Distributed
    from bsky_backfill.distributed.app import BrokerSettings

    if broker is None:
        if state_url is not None:
            _fail("--state-url goes with --broker (jobs on Celery workers)", code=2)
        return None
    if state_url is None:
        _fail("--broker needs --state-url: the PostgreSQL job store the workers share", code=2)
    try:
        section = Distributed(state_url=state_url, state_schema=state_schema, redis_url=broker)
    except ValidationError as exc:
        _fail(f"--broker / --state-url / --state-schema: {exc.errors()[0]['msg']}", code=2)
    return ClusterSettings(BrokerSettings(broker, queue, visibility_timeout), section)


_HOME = Annotated[
    Path,
    typer.Option(help="The server's folder: its database (configs, keys, audit log, jobs)."),
]
DEFAULT_HOME = Path("bsky-backfill-server")


@app.command()
def serve(
    data_root: Annotated[
        list[Path] | None,
        typer.Option(help="A folder API configs may read and write in (repeatable)."),
    ] = None,
    home: _HOME = DEFAULT_HOME,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    allow_private_addresses: Annotated[
        bool,
        typer.Option(help="Let configs reach loopback / private addresses (test networks only)."),
    ] = False,
    requests_per_second: Annotated[
        float, typer.Option(min=0.1, help="Requests per second allowed per API key.")
    ] = 10.0,
    max_host_rate: Annotated[
        float,
        typer.Option(min=0.1, help="Most a config may set processing.requests_per_second to."),
    ] = ApiLimits.requests_per_second,
    max_hosts: Annotated[
        int, typer.Option(min=1, help="Most a config may set processing.max_concurrent_pds to.")
    ] = ApiLimits.max_concurrent_pds,
    max_repo_bytes: Annotated[
        int, typer.Option(min=1, help="Most a config may set network.max_repo_bytes to.")
    ] = ApiLimits.max_repo_bytes,
    broker: Annotated[
        str | None,
        typer.Option(help="Run jobs on Celery workers at this broker (needs --state-url)."),
    ] = None,
    queue: _QUEUE = "bsky-backfill",
    visibility_timeout: _VISIBILITY = 600.0,
    state_url: Annotated[
        str | None,
        typer.Option(help="With --broker: the PostgreSQL job store the workers share."),
    ] = None,
    state_schema: Annotated[
        str | None, typer.Option(help="With --broker: a schema of its own for the job store.")
    ] = None,
    log_level: _LOG_LEVEL = "INFO",
) -> None:
    """Serve the HTTP API (jobs, configs, status) with OpenAPI docs at /docs.

    Configs sent to it may only name local paths inside the data roots (default:
    HOME/data). Create a key first: bsky-backfill keys create --scope write
    Example: bsky-backfill serve --data-root /srv/backfills --port 8000
    """
    import uvicorn

    from bsky_backfill.api.app import ServerSettings, create_app

    configure_logging(log_level)
    roots = tuple(path.resolve() for path in (data_root or [home / "data"]))
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    settings = ServerSettings(
        home=home.resolve(),
        data_roots=roots,
        allow_private_addresses=allow_private_addresses,
        requests_per_second=requests_per_second,
        limits=ApiLimits(max_host_rate, max_hosts, max_repo_bytes),
        cluster=_cluster(broker, queue, visibility_timeout, state_url, state_schema),
    )
    typer.echo(
        f"serving on http://{host}:{port} (docs at /docs); data roots: "
        + ", ".join(map(str, roots)),
        err=True,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


keys_app = typer.Typer(help="API keys for the server: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _with_keys(home: Path, use: Callable[[KeyStore], Awaitable[_T]]) -> _T:
    """Run ``use`` on the key store in ``home`` (created if missing), then close it."""
    from bsky_backfill.api.app import DATABASE
    from bsky_backfill.api.keys import KeyStore

    home.mkdir(parents=True, exist_ok=True)

    async def opened() -> _T:
        store = await KeyStore.open(home / DATABASE)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return asyncio.run(opened())


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
    name: Annotated[str, typer.Option(help="A note saying whose key it is.")] = "",
    home: _HOME = DEFAULT_HOME,
) -> None:
    """Create a key; its token is printed once, alone on the last line (store it now)."""
    from bsky_backfill.api.keys import Scope

    if scope not in {s.value for s in Scope}:
        _fail(f"--scope must be one of {', '.join(s.value for s in Scope)}, not {scope!r}", code=2)
    key, token = _with_keys(home, lambda store: store.create(Scope(scope), name))
    typer.echo(f"created key {key.id} with scope {scope}; the token (shown once):", err=True)
    typer.echo(token)


@keys_app.command("list")
def keys_list(home: _HOME = DEFAULT_HOME) -> None:
    """List keys: id, scope, name, created, last used, revoked (never the tokens)."""
    table = Table("id", "scope", "name", "created", "last used", "revoked")
    for key in _with_keys(home, lambda store: store.list()):
        moments = (key.created_at, key.last_used_at, key.revoked_at)
        table.add_row(key.id, str(key.scope), key.name, *(_when(m) for m in moments))
    Console(emoji=False).print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from keys list).")],
    home: _HOME = DEFAULT_HOME,
) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    _with_keys(home, lambda store: store.revoke(key_id))
    typer.echo(f"revoked key {key_id}")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


def _print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        typer.echo(str(problem), err=True)


def _fail(message: str, *, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    """Console entry point: run the app, mapping our errors to one line and an exit code."""
    started = time.monotonic()
    tune_process()
    configure_logging("WARNING")  # commands that run jobs set their own level
    try:
        app()
    except ConfigError as exc:
        for problem in exc.problems:  # several when a config has several problems
            typer.echo(f"error: {problem}", err=True)
        sys.exit(2)
    except BackfillError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo(f"interrupted after {time.monotonic() - started:.1f} s", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: one line for the user, the traceback kept for a report
        report = _keep_traceback()
        typer.echo(
            f"error: internal error (a bug in bsky-backfill, please report it): "
            f"{type(exc).__name__}: {exc}; traceback in {report}",
            err=True,
        )
        sys.exit(1)


def _keep_traceback() -> str:
    """The current exception's traceback, written to a new file in the temp folder."""
    import tempfile
    import traceback

    handle, path = tempfile.mkstemp(prefix="bsky-backfill-error-", suffix=".txt")
    with open(handle, "w", encoding="utf-8") as out:
        traceback.print_exc(file=out)
    return path
