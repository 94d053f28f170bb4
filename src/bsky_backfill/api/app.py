"""The HTTP API: ``create_app(settings)`` builds the FastAPI application ``serve`` runs.

Routes under ``/api/backfill`` (DESIGN.md "Interfaces"): ``POST /start``,
``GET /status/{job_id}``, ``GET /jobs``, ``DELETE /jobs/{job_id}``, ``GET /configs``,
``POST /configs``, ``POST /dispatch`` (a dispatch config, run in the background); plus
``/healthz`` and ``/metrics`` (no key needed) and the OpenAPI page at ``/docs``. Every
other route needs ``Authorization: Bearer <key>`` with the route's scope (read < write <
admin): 401 without a valid key, 403 with too weak a one, 429 (with ``RateLimit-*`` and
``Retry-After``) over the key's request rate. Every
mutating call (POST, DELETE) is written to the audit log, refused ones included.

A config received over HTTP is a request to read local files and fetch URLs, so it is
loaded as text only (never taken for a file name), without ``${ENV}`` expansion, and
checked by :func:`~bsky_backfill.api.safety.check_api_config` against the server's
data roots and address policy; problems answer 422 with the field path of each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.routing import Match

from bsky_backfill.api.dashboard import DASHBOARD_HTML
from bsky_backfill.api.jobs import JobAlreadyRunning, JobManager, JobStatus, RunJob
from bsky_backfill.api.keys import ApiKey, KeyStore, Scope
from bsky_backfill.api.limits import ApiLimits
from bsky_backfill.api.metrics import render_metrics
from bsky_backfill.api.ratelimit import KeyRateLimiter
from bsky_backfill.api.registry import Registry
from bsky_backfill.api.safety import (
    MAX_CONFIG_BYTES,
    ApiPolicy,
    check_api_config,
    check_config_size,
)
from bsky_backfill.config.loader import load_config_text
from bsky_backfill.config.schema import BackfillConfig, Distributed
from bsky_backfill.config.yamldoc import with_section
from bsky_backfill.core.job import JobOutcome, run_job
from bsky_backfill.core.manager import Progress
from bsky_backfill.dispatch.config import DispatchConfig
from bsky_backfill.distributed.app import BrokerSettings
from bsky_backfill.errors import ConfigError, JobNotFound
from bsky_backfill.observability.metrics import JobMetrics

__all__ = [
    "DATABASE",
    "PREFIX",
    "ClusterSettings",
    "ConfigRequest",
    "ConfigSummary",
    "DispatchAccepted",
    "DispatchRequest",
    "JobAccepted",
    "ProblemDetail",
    "ServerSettings",
    "StartRequest",
    "WriterKey",
    "create_app",
    "need",
]

PREFIX: Final = "/api/backfill"
DATABASE: Final = "server.sqlite"
_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs: ``home`` holds its database; configs may only name local
    paths inside ``data_roots``; private addresses only with ``allow_private_addresses``
    (test networks); each key may make ``requests_per_second`` (bursts of ``burst``);
    configs may ask for at most ``limits`` (pace, hosts at once, repo size); with
    ``cluster``, jobs run on Celery workers instead of in the server."""

    home: Path
    data_roots: tuple[Path, ...]
    allow_private_addresses: bool = False
    requests_per_second: float = 10.0
    burst: int = 30
    limits: ApiLimits = field(default_factory=ApiLimits)
    cluster: ClusterSettings | None = None
    policy: ApiPolicy = field(init=False)

    def __post_init__(self) -> None:
        if not self.data_roots:
            raise ConfigError("the server needs at least one data root (--data-root DIR)")
        policy = ApiPolicy(self.data_roots, self.allow_private_addresses, self.limits)
        object.__setattr__(self, "policy", policy)


@dataclass(frozen=True)
class ClusterSettings:
    """Jobs go to Celery workers (``serve --broker``): the broker, and the
    ``distributed`` section every job started here runs with."""

    broker: BrokerSettings
    section: Distributed


@dataclass
class _Services:
    keys: KeyStore
    registry: Registry
    jobs: JobManager
    limiter: KeyRateLimiter


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StartRequest(_Strict):
    """A stored config by name (latest version unless ``config_version``), or YAML."""

    config_name: Annotated[str | None, Field(pattern=_NAME_PATTERN)] = None
    config_version: Annotated[int | None, Field(ge=1)] = None
    config_yaml: Annotated[str | None, Field(max_length=MAX_CONFIG_BYTES)] = None

    @model_validator(mode="after")
    def _one_source(self) -> StartRequest:
        if (self.config_name is None) == (self.config_yaml is None):
            raise ValueError("give exactly one of config_name and config_yaml")
        if self.config_version is not None and self.config_name is None:
            raise ValueError("config_version goes with config_name")
        return self


class ConfigRequest(_Strict):
    """A named config to store as its next version; ``name`` is the YAML's ``name``."""

    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    yaml: Annotated[str, Field(min_length=1, max_length=MAX_CONFIG_BYTES)]


class JobAccepted(BaseModel):
    """The answer to ``POST /start``: the id to follow with ``GET /status/{job_id}``."""

    job_id: str


class DispatchRequest(_Strict):
    """A dispatch config (YAML with top-level ``dispatch:``) to run in the background."""

    config_yaml: Annotated[str, Field(min_length=1, max_length=MAX_CONFIG_BYTES)]


class DispatchAccepted(BaseModel):
    """The answer to ``POST /dispatch``: the dispatch started (its config's name)."""

    dispatch: str


class ConfigSummary(BaseModel):
    """One stored config version (its YAML is not echoed back)."""

    name: str
    version: int
    sha256: str
    created_at: str


class ProblemDetail(BaseModel):
    """Every error answer: ``{"detail": ...}`` (a message, or a list of problems)."""

    detail: Any


_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ProblemDetail, "description": "no valid API key"},
    403: {"model": ProblemDetail, "description": "the key's scope is too weak"},
    429: {"model": ProblemDetail, "description": "over the key's request rate"},
}


_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ProblemDetail, "description": "no such job or stored config"}
}
_BAD_BODY: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ProblemDetail, "description": "the body is not JSON"}
}


def create_app(settings: ServerSettings, *, run: RunJob = run_job) -> FastAPI:
    """The application; its lifespan opens the server database under ``settings.home``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home.mkdir(parents=True, exist_ok=True)
        database = settings.home / DATABASE
        keys = await KeyStore.open(database)
        registry = await Registry.open(database)
        jobs = JobManager(registry, run=_cluster_runner(settings) if settings.cluster else run)
        limiter = KeyRateLimiter(settings.requests_per_second, settings.burst)
        app.state.services = _Services(keys, registry, jobs, limiter)
        try:
            yield
        finally:
            await jobs.aclose()
            await registry.aclose()
            await keys.aclose()

    app = FastAPI(title="bsky-backfill", lifespan=lifespan, responses=_ERRORS)
    app.middleware("http")(_audit)
    app.exception_handler(ConfigError)(_config_problems)
    app.exception_handler(JobNotFound)(_not_found)
    app.exception_handler(JobAlreadyRunning)(_conflict)
    app.exception_handler(405)(_method_not_allowed)
    _routes(app, settings)
    _dispatch_route(app, settings)
    return app


def _services(request: Request) -> _Services:
    services: _Services = request.app.state.services
    return services


def need(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency admitting requests whose bearer key has ``scope`` (or a wider one)."""

    async def admit(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> ApiKey:
        services = _services(request)
        scheme, _, token = (authorization or "").partition(" ")
        key = await services.keys.authenticate(token.strip()) if scheme == "Bearer" else None
        if key is None:
            raise HTTPException(
                401,
                "a valid API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        request.state.key_id = key.id
        decision = services.limiter.check(key.id)
        if not decision.allowed:
            raise HTTPException(429, "too many requests for this key", headers=decision.headers())
        if not key.scope.allows(scope):
            raise HTTPException(403, f"this key's scope is {key.scope}; this needs {scope}")
        return key

    return admit


WriterKey = Annotated[ApiKey, Depends(need(Scope.WRITE))]
"""A route parameter: the caller's key, which must have the write scope."""


def _routes(app: FastAPI, settings: ServerSettings) -> None:
    reader, writer = Depends(need(Scope.READ)), Depends(need(Scope.WRITE))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> str:
        return DASHBOARD_HTML

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> str:
        jobs = _services(request).jobs
        return render_metrics(await jobs.jobs(), jobs.metrics())

    @app.post(
        f"{PREFIX}/start",
        status_code=202,
        dependencies=[writer],
        responses={
            **_NOT_FOUND,
            **_BAD_BODY,
            409: {"model": ProblemDetail, "description": "already running"},
        },
    )
    async def start(body: StartRequest, request: Request) -> JobAccepted:
        services = _services(request)
        name, version, text = None, None, body.config_yaml
        if body.config_name is not None:
            stored = await services.registry.config(body.config_name, body.config_version)
            if stored is None:
                raise HTTPException(404, f"no stored config {body.config_name!r}")
            name, version, text = stored.name, stored.version, stored.yaml
        assert text is not None  # the model requires one of the two
        config, runnable = await _checked(text, settings)
        job_id = await services.jobs.start(
            config, runnable, config_name=name, config_version=version
        )
        return JobAccepted(job_id=job_id)

    @app.get(f"{PREFIX}/status/{{job_id}}", dependencies=[reader], responses=_NOT_FOUND)
    async def status(job_id: str, request: Request) -> dict[str, Any]:
        return _status_json(await _services(request).jobs.status(job_id))

    @app.get(f"{PREFIX}/jobs", dependencies=[reader])
    async def jobs(request: Request) -> list[dict[str, Any]]:
        return [_status_json(s) for s in await _services(request).jobs.jobs()]

    @app.delete(
        f"{PREFIX}/jobs/{{job_id}}", status_code=202, dependencies=[writer], responses=_NOT_FOUND
    )
    async def cancel(job_id: str, request: Request) -> dict[str, Any]:
        return _status_json(await _services(request).jobs.cancel(job_id))

    @app.get(f"{PREFIX}/configs", dependencies=[reader])
    async def configs(request: Request) -> list[ConfigSummary]:
        return [
            ConfigSummary(
                name=c.name, version=c.version, sha256=c.sha256, created_at=c.created_at.isoformat()
            )
            for c in await _services(request).registry.configs()
        ]

    @app.post(f"{PREFIX}/configs", status_code=201, responses=_BAD_BODY)
    async def save_config(body: ConfigRequest, request: Request, key: WriterKey) -> ConfigSummary:
        config, _ = await _checked(body.yaml, settings)
        if config.name != body.name:
            raise ConfigError(
                f"is {config.name!r} but the request names {body.name!r}: they must match",
                key="backfill.name",
            )
        stored = await _services(request).registry.save_config(body.name, body.yaml, key.id)
        return ConfigSummary(
            name=stored.name,
            version=stored.version,
            sha256=stored.sha256,
            created_at=stored.created_at.isoformat(),
        )


def _dispatch_route(app: FastAPI, settings: ServerSettings) -> None:
    """``POST /dispatch``: check a dispatch config like a job's, then run it as a task of
    this app (one run per dispatch name at a time: 409 otherwise)."""
    from bsky_backfill.dispatch.background import DispatchAlreadyRunning, DispatchTasks
    from bsky_backfill.dispatch.loader import load_dispatch_config_text
    from bsky_backfill.dispatch.safety import check_api_dispatch

    tasks = DispatchTasks()

    @app.post(
        f"{PREFIX}/dispatch",
        status_code=202,
        dependencies=[Depends(need(Scope.WRITE))],
        responses={**_BAD_BODY, 409: {"model": ProblemDetail, "description": "already running"}},
    )
    async def dispatch(body: DispatchRequest) -> DispatchAccepted:
        check_config_size(body.config_yaml)

        def check() -> DispatchConfig:
            config = load_dispatch_config_text(
                body.config_yaml, base_dir=settings.data_roots[0], environ={}
            )
            check_api_dispatch(config, settings.policy)
            return config

        config = await asyncio.to_thread(check)
        try:
            tasks.start(config)
        except DispatchAlreadyRunning as exc:
            raise HTTPException(409, str(exc)) from None
        return DispatchAccepted(dispatch=config.name)


async def _checked(text: str, settings: ServerSettings) -> tuple[BackfillConfig, str]:
    """The config in ``text``, loaded as text without environment, and safe to run, with
    the text to run it from (the server's ``distributed`` section added for a cluster).
    In a thread: the address checks resolve host names (blocking DNS)."""
    check_config_size(text)

    def check() -> tuple[BackfillConfig, str]:
        config = load_config_text(text, base_dir=settings.data_roots[0], environ={})
        check_api_config(config, settings.policy)
        if settings.cluster is None:
            return config, text
        runnable = with_section(text, "distributed", settings.cluster.section.model_dump())
        return load_config_text(runnable, base_dir=settings.data_roots[0], environ={}), runnable

    return await asyncio.to_thread(check)


def _cluster_runner(settings: ServerSettings) -> RunJob:
    """``run_job``'s shape, running the job on the cluster's workers."""
    from bsky_backfill.distributed.app import celery_app
    from bsky_backfill.distributed.coordinator import run_distributed

    assert settings.cluster is not None
    celery = celery_app(settings.cluster.broker)
    base_dir = settings.data_roots[0]

    async def run(
        config: BackfillConfig,
        text: str,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        metrics: JobMetrics | None = None,
    ) -> JobOutcome:
        return await run_distributed(
            config, text, celery, base_dir=base_dir, on_progress=on_progress, metrics=metrics
        )

    return run


def _status_json(status: JobStatus) -> dict[str, Any]:
    document = asdict(status)
    document["state"] = status.state.value
    for moment in ("started_at", "finished_at"):
        value = getattr(status, moment)
        document[moment] = value.isoformat() if value is not None else None
    return document


async def _config_problems(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConfigError)
    detail = [
        {
            "loc": ["body", *(problem.key.split(".") if problem.key else [])],
            "msg": problem.message,
            "line": problem.line,
            "type": "config",
        }
        for problem in exc.problems
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _conflict(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 with ``Allow`` listing every method of the path (each method is its own
    route, so Starlette would name only the first route's)."""
    allowed: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "__none__"})
        if match is not Match.NONE:
            allowed |= getattr(route, "methods", None) or set()
    headers = {"Allow": ", ".join(sorted(allowed))}
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)


async def _audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Write every mutating call to the audit log, whatever its outcome."""
    response = await call_next(request)
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        key_id = getattr(request.state, "key_id", None)
        await _services(request).keys.audit(
            key_id, request.method, request.url.path, response.status_code
        )
    return response
