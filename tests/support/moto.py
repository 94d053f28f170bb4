"""moto in server mode: S3 and DynamoDB over real HTTP on 127.0.0.1, for tests.

The server runs as its own process (``python -m moto.server``), so boto3 talks to it
exactly as to AWS: real requests, real signing, real limits (400 KB items, 5 MB parts).
``moto_server`` starts one per test session; ``aws`` resets it and points the AWS
environment (dummy credentials, region) at it for one test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from tests.support import free_port, require

__all__ = [
    "DEFAULT_TABLES",
    "REGION",
    "Moto",
    "aws",
    "moto_server",
    "read_only_aws",
    "read_only_server",
    "start_moto",
]

REGION: Final = "us-west-2"
CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass(frozen=True)
class Moto:
    """A running moto server: ``url`` for ``endpoint_url``, ``env`` for child processes
    (and, through the ``aws`` fixtures, for this one) with the credentials to use."""

    url: str
    access_key: str = "testing"
    secret_key: str = "testing"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that should use this server's credentials."""
        isolated = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {
            **isolated,
            **CREDENTIALS,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def reset(self) -> None:
        """Forget every bucket, object and table."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"))

    def client(self, service: str):  # type: ignore[no-untyped-def]
        """A boto3 client on this server (for arranging and checking tests)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def bucket(self, name: str) -> str:
        """Create bucket ``name``; return it."""
        self.client("s3").create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        return name


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Moto]:
    """Start a moto server process; return it once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(extra_env or {})},
    )
    server = Moto(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{server.url}/moto-api/", timeout=1)
            return process, server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto server did not start on port {port}") from None
            time.sleep(0.1)


def _require_moto() -> None:
    present = all(importlib.util.find_spec(m) for m in ("moto", "flask", "boto3"))
    require(present, "moto[server] and boto3 (pip install 'moto[server]' boto3)")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """One moto server for the test session (skipped locally, failed in CI, if absent)."""
    _require_moto()
    process, server = start_moto()
    try:
        yield server
    finally:
        process.terminate()
        process.wait(10)


def _use(server: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    for name, value in server.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return server


@pytest.fixture
def aws(moto_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """The session's moto server, emptied, with this process's AWS environment on it."""
    moto_server.reset()
    return _use(moto_server, monkeypatch)


# The setup calls of ``read_only_server`` that moto lets through before enforcing IAM.
_SETUP_CALLS: Final = 7
READ_ONLY_POLICY: Final = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            # moto checks HEAD bucket as "s3:HeadBucket"; AWS checks s3:ListBucket.
            "Action": [
                "s3:ListBucket",
                "s3:HeadBucket",
                "s3:GetObject",
                "dynamodb:DescribeTable",
            ],
            "Resource": "*",
        }
    ],
}
DEFAULT_TABLES: Final = {
    "backfill_results": (("did", "HASH"), ("key", "RANGE")),
    "backfill_user_metadata": (("did", "HASH"), ("job_id", "RANGE")),
    "backfill_metadata": (("job_id", "HASH"), ("finished_at", "RANGE")),
}


@pytest.fixture(scope="session")
def read_only_server() -> Iterator[Moto]:
    """A moto server enforcing IAM, holding bucket ``datasets`` and the three default
    DynamoDB tables; its credentials belong to a user who may only read and describe."""
    _require_moto()
    process, admin = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_CALLS)})
    try:
        iam = admin.client("iam")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(
            UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(READ_ONLY_POLICY)
        )
        admin.bucket("datasets")
        dynamodb = admin.client("dynamodb")
        for table, keys in DEFAULT_TABLES.items():
            dynamodb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": n, "KeyType": t} for n, t in keys],
                AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n, _ in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        yield Moto(admin.url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def read_only_aws(read_only_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """``read_only_server`` with this process's AWS environment on its read-only user."""
    return _use(read_only_server, monkeypatch)
