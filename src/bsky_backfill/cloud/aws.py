"""AWS clients, and the one place botocore's errors become bsky-backfill's.

Credentials come from boto3's standard chain (environment, shared files and profiles,
container or instance roles): this module never reads, stores or logs them.
``endpoint_url`` points the client at an S3- or DynamoDB-compatible server (MinIO,
LocalStack, moto); S3 then uses path-style addressing, which such servers expect.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from bsky_backfill.errors import (
    SinkWriteFailed,
    StorageAccessDenied,
    StorageMissing,
    StorageRefused,
    StoreUnavailable,
)

__all__ = ["DEFAULT_REGION", "AwsTarget", "aws_errors", "split_s3_uri"]

DEFAULT_REGION: Final = "us-east-1"
"""The region used when neither the config nor the AWS chain names one."""

_MISSING = frozenset({"NoSuchBucket", "NoSuchKey", "NotFound", "404", "ResourceNotFoundException"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AllAccessDisabled",
    }
)
_TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "InternalServerError",
        "RequestTimeout",
    }
)
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


@dataclass(frozen=True, slots=True)
class AwsTarget:
    """Where the AWS calls go: ``region`` (else the chain's, else ``DEFAULT_REGION``) and
    an optional compatible server at ``endpoint_url``."""

    region: str | None = None
    endpoint_url: str | None = None

    def client(self, service: Literal["s3", "dynamodb"]) -> Any:
        """A new thread-safe client for ``service`` with bounded timeouts and retries."""
        session = boto3.session.Session()
        config = Config(
            retries={"mode": "standard", "max_attempts": 6},
            connect_timeout=10,
            read_timeout=120,
            s3={"addressing_style": "path"} if self.endpoint_url else None,
            # Checking every attribute of every item client-side cost a third of the
            # DynamoDB sink's CPU (measured); our items are well-formed by construction
            # and the service validates them anyway.
            parameter_validation=service != "dynamodb",
        )
        return session.client(
            service,
            region_name=self.region or session.region_name or DEFAULT_REGION,
            endpoint_url=self.endpoint_url,
            config=config,
        )


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")`` (key may be empty)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _code(error: ClientError) -> str:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or str(status or "")


@contextmanager
def aws_errors(resource: str, action: str, *, writing: bool = False) -> Iterator[None]:
    """Translate botocore errors raised inside into bsky-backfill errors naming ``resource``.

    ``action`` says what was tried (``"write to"``, ``"read"`` ...). Missing resources and
    refused permissions become ``StorageMissing`` / ``StorageAccessDenied`` (fix and run
    again); throttling, 5xx and unreachable endpoints that outlast botocore's retries
    become ``SinkWriteFailed`` when ``writing``, else ``StoreUnavailable`` (retryable).
    """
    try:
        yield
    except ClientError as e:
        code = _code(e)
        message = e.response.get("Error", {}).get("Message") or code
        if code in _MISSING:
            raise StorageMissing(
                f"cannot {action} {resource}: it does not exist ({code}); create it or fix"
                " the name in the config",
                resource=resource,
            ) from None
        if code in _DENIED:
            raise StorageAccessDenied(
                f"cannot {action} {resource}: access denied ({code}: {message}); check the"
                " credentials and that their policy allows this",
                resource=resource,
            ) from None
        if code in _TRANSIENT or code.startswith("5"):
            raise _unavailable(
                f"cannot {action} {resource}: {code}: {message}", resource, writing
            ) from e
        raise StorageRefused(
            f"cannot {action} {resource}: {code}: {message}", resource=resource
        ) from e
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise StorageAccessDenied(
            f"cannot {action} {resource}: {e}; set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where a role provides them",
            resource=resource,
        ) from None
    except _UNREACHABLE as e:
        raise _unavailable(f"cannot {action} {resource}: {e}", resource, writing) from e
    except BotoCoreError as e:
        raise StorageRefused(f"cannot {action} {resource}: {e}", resource=resource) from e


def _unavailable(message: str, resource: str, writing: bool) -> StoreUnavailable:
    return SinkWriteFailed(message, path=resource) if writing else StoreUnavailable(message)
