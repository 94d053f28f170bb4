"""Every error bsky-backfill raises, in one tree.

```
BackfillError                     context: did, host, url
├── RetryableError                retry_after (seconds or None): try again later
│   ├── RateLimited               429 / RateLimitExceeded; its own retry budget, never fails a DID
│   ├── HostUnavailable           5xx, connection refused / reset, timeout
│   ├── TruncatedRepo             the CAR ends early or lacks a block the tree needs
│   └── StoreUnavailable          the state store or a sink cannot be reached
│       └── SinkWriteFailed       disk full / read-only / permissions (path, errno)
├── PermanentError                retrying gives the same answer
│   ├── RepoUnavailable           the account has no readable repo
│   │   ├── RepoNotFound
│   │   ├── RepoTakendown
│   │   ├── RepoDeactivated
│   │   └── RepoSuspended
│   ├── InvalidSyntax             an identifier that breaks the spec (kind names which)
│   │   └── InvalidDid
│   ├── InvalidKey                a did:key / Multikey that cannot be decoded
│   ├── DidResolutionError        the DID has no usable document
│   │   ├── DidNotFound           404 from the PLC directory / did:web host
│   │   ├── DidTombstoned         410 from the PLC directory
│   │   └── InvalidDidDocument    no PDS endpoint, bad JSON, wrong id ...
│   ├── InvalidRepo               the repo is corrupt or forged
│   │   ├── MalformedCar          bad framing, header, CID, or a block over the size cap
│   │   ├── CorruptBlock          a block's bytes do not hash to its CID
│   │   ├── MalformedBlock        a block that is not valid DAG-CBOR (or nests too deep)
│   │   ├── InvalidCommit         the commit object breaks the spec or names another DID
│   │   ├── BadSignature          the commit signature does not verify
│   │   └── MalformedMst          the tree breaks MST rules (order, depth, shape)
│   ├── RepoTooLarge              over the configured byte cap
│   ├── ResponseTooLarge          an XRPC body over its cap
│   ├── XrpcError                 any other XRPC error (InvalidRequest, unknown 4xx)
│   └── StorageRefused            cloud storage refuses for good; resource names it
│       ├── StorageMissing        no such bucket / object / table
│       └── StorageAccessDenied   the credentials may not use it, or there are none
├── StoreError                    the state store refused for good; retrying cannot help
│   ├── JobNotFound               no job with that id
│   └── BatchRejected             a batch that is not open, or whose DIDs its worker lost
└── ConfigError                   never retried; source, line and key locate it; one line each
    └── ConfigProblems            several found at once: ``problems`` lists every one
```

Retry decisions use ``isinstance(e, RetryableError)``, never the message text.
"""

from __future__ import annotations

__all__ = [
    "BackfillError",
    "BadSignature",
    "BatchRejected",
    "ConfigError",
    "ConfigProblems",
    "CoordinatorBusy",
    "CorruptBlock",
    "DidNotFound",
    "DidResolutionError",
    "DidTombstoned",
    "HostUnavailable",
    "InvalidCommit",
    "InvalidDid",
    "InvalidDidDocument",
    "InvalidKey",
    "InvalidRepo",
    "InvalidSyntax",
    "JobCancelled",
    "JobNotFound",
    "MalformedBlock",
    "MalformedCar",
    "MalformedMst",
    "PermanentError",
    "RateLimited",
    "RepoDeactivated",
    "RepoNotFound",
    "RepoSuspended",
    "RepoTakendown",
    "RepoTooLarge",
    "RepoUnavailable",
    "ResponseTooLarge",
    "RetryableError",
    "SinkWriteFailed",
    "StorageAccessDenied",
    "StorageMissing",
    "StorageRefused",
    "StoreError",
    "StoreUnavailable",
    "TruncatedRepo",
    "WorkerTaskFailed",
    "XrpcError",
]


class BackfillError(Exception):
    """Base of every error raised by bsky-backfill; carries where it happened."""

    def __init__(
        self,
        message: str,
        *,
        did: str | None = None,
        host: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.did = did
        self.host = host
        self.url = url

    def __str__(self) -> str:
        where = [f"{k}={v}" for k, v in (("did", self.did), ("host", self.host)) if v]
        return f"{self.message} ({', '.join(where)})" if where else self.message


class RetryableError(BackfillError):
    """The same request may succeed later; ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **context: str | None):
        super().__init__(message, **context)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """The host said 429 (RateLimitExceeded); pause this host, not the DID.

    ``remaining`` / ``reset_at``: what the refusal's own ``RateLimit-Remaining`` and
    ``RateLimit-Reset`` claimed (None: absent). A host that refuses while claiming room
    in the same window advertises more than it allows.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        remaining: int | None = None,
        reset_at: float | None = None,
        **context: str | None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, **context)
        self.remaining = remaining
        self.reset_at = reset_at


class HostUnavailable(RetryableError):
    """A 5xx answer, a refused or reset connection, or a timeout."""


class TruncatedRepo(RetryableError):
    """The CAR stopped early or lacks a block the tree needs: download it again."""


class StoreUnavailable(RetryableError):
    """The state store or a sink could not be reached."""


class SinkWriteFailed(StoreUnavailable):
    """Writing the dataset failed (disk full, read-only, permissions, I/O): ``path`` and
    ``errno`` say where and why; nothing half-written is visible, and the same call
    succeeds once the cause is fixed."""

    def __init__(self, message: str, *, path: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class PermanentError(BackfillError):
    """Asking again gives the same answer."""


class RepoUnavailable(PermanentError):
    """The account exists (or existed) but has no readable repo; ``status`` names why."""

    status = "unavailable"


class RepoNotFound(RepoUnavailable):
    status = "not_found"


class RepoTakendown(RepoUnavailable):
    status = "takendown"


class RepoDeactivated(RepoUnavailable):
    status = "deactivated"


class RepoSuspended(RepoUnavailable):
    status = "suspended"


class InvalidSyntax(PermanentError, ValueError):
    """A string that is not a valid identifier of its ``kind`` (did, handle, nsid ...)."""

    def __init__(self, kind: str, value: object, reason: str, **context: str | None) -> None:
        shown = repr(value) if len(repr(value)) <= 120 else repr(value)[:117] + "..."
        super().__init__(f"invalid {kind} {shown}: {reason}", **context)
        self.kind = kind
        self.value = value
        self.reason = reason


class InvalidDid(InvalidSyntax):
    """A DID that breaks the DID syntax; no request is made for it."""


class InvalidKey(PermanentError, ValueError):
    """A did:key or Multikey string that cannot be decoded into a public key."""


class DidResolutionError(PermanentError):
    """The DID could not be resolved to a usable document."""


class DidNotFound(DidResolutionError):
    """The directory (or did:web host) has no document for this DID."""


class DidTombstoned(DidResolutionError):
    """The PLC directory answered 410: the DID was deleted."""


class InvalidDidDocument(DidResolutionError):
    """The document is not JSON, names another DID, or lacks a PDS endpoint."""


class InvalidRepo(PermanentError):
    """The downloaded repo is corrupt or forged; retrying the same host will not help."""


class MalformedCar(InvalidRepo):
    """The CAR framing, header or a CID cannot be parsed, or a block is over the size cap."""


class CorruptBlock(InvalidRepo):
    """A block's sha256 differs from the digest in its CID."""


class MalformedBlock(InvalidRepo):
    """A block that should be DAG-CBOR cannot be decoded (or nests deeper than allowed)."""


class InvalidCommit(InvalidRepo):
    """The signed commit object is not a valid version-3 commit of the expected DID."""


class BadSignature(InvalidRepo):
    """The commit signature does not verify against the account's signing key."""


class MalformedMst(InvalidRepo):
    """The Merkle Search Tree breaks its rules: key order, key depth or node shape."""


class RepoTooLarge(PermanentError):
    """The repo is larger than the configured cap."""


class ResponseTooLarge(PermanentError):
    """An XRPC response body exceeded its size cap."""


class XrpcError(PermanentError):
    """Any other XRPC error answer; ``error`` is the XRPC error name, ``status`` the HTTP code."""

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        status: int | None = None,
        **context: str | None,
    ) -> None:
        super().__init__(message, **context)
        self.error = error
        self.status = status


class StorageRefused(PermanentError):
    """Cloud storage (S3, DynamoDB) refused for good; ``resource`` names the bucket, object
    or table (``s3://bucket/key``, ``dynamodb:table``). Fix the config, the resource or the
    permissions, then run again: a job stopped by this resumes where it was."""

    def __init__(self, message: str, *, resource: str) -> None:
        super().__init__(message)
        self.resource = resource


class StorageMissing(StorageRefused):
    """The bucket, object or table does not exist."""


class StorageAccessDenied(StorageRefused):
    """The credentials may not use the resource, are invalid, or none were found."""


class StoreError(BackfillError):
    """The state store refused an operation for good: an unknown job, a batch it will not
    commit, a schema it does not know, a broken constraint. ``job_id`` names the job."""

    def __init__(self, message: str, *, job_id: str | None = None, did: str | None = None):
        super().__init__(message, did=did)
        self.job_id = job_id


class JobNotFound(StoreError):
    """No job with this id exists in the store."""


class JobCancelled(BackfillError):
    """The job was cancelled (``bsky-backfill cancel``, the API); run it again to resume."""


class CoordinatorBusy(BackfillError):
    """Another coordinator (``run --distributed`` or a server) is running this job now."""


class WorkerTaskFailed(BackfillError):
    """A distributed job's tasks failed on the workers (planning failed, or shard tasks
    kept failing round after round), or no worker took them: the message says which."""


class BatchRejected(StoreError):
    """``commit_batch`` / ``mark_published`` refused a batch: never issued, abandoned by a
    recovery, or some of its DIDs are no longer held by the worker that opened it. The
    sink must discard the staged batch; ``batch_id`` names it."""

    def __init__(self, message: str, *, job_id: str, batch_id: str) -> None:
        super().__init__(message, job_id=job_id)
        self.batch_id = batch_id


class ConfigError(BackfillError):
    """The configuration is invalid; never retried.

    ``source`` (the config file as given), ``line`` (1-based) and ``key`` (a dotted path such
    as ``backfill.processing.batch_size``) locate it when known; ``str()`` puts them in
    front: ``config.yaml:12: backfill.processing.batch_size: must be at least 1``.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.line = line
        self.source = source

    @property
    def problems(self) -> tuple[ConfigError, ...]:
        """Every problem found: this one alone, unless it is a :class:`ConfigProblems`."""
        return (self,)

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return ": ".join(part for part in (where, self.key, self.message) if part)


class ConfigProblems(ConfigError):
    """Several problems found in one config at once; ``str()`` gives one line for each."""

    def __init__(self, problems: tuple[ConfigError, ...], *, source: str | None = None) -> None:
        super().__init__(f"{len(problems)} problems in the config", source=source)
        self._problems = problems

    @property
    def problems(self) -> tuple[ConfigError, ...]:
        return self._problems

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self._problems)
