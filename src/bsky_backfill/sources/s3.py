"""DIDs from S3: one object, or every table object under a prefix, streamed.

``uri`` naming a ``.txt``/``.csv``/``.jsonl``/``.parquet`` object reads that object;
any other ``uri`` is a prefix, read object by object in key order. Under a prefix, empty
objects and names starting with ``_`` or ``.`` (``_SUCCESS`` markers, hidden files) are
skipped; any other object of an unknown type is an error naming it, so a typo never
silently drops a file of DIDs. Text objects are decoded as they download; a Parquet
object needs its footer first, so it is spooled to a temporary file.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import PurePosixPath

from bsky_backfill.cloud.aws import AwsTarget, aws_errors
from bsky_backfill.cloud.s3 import Bucket
from bsky_backfill.errors import ConfigError
from bsky_backfill.sources.files import (
    SUFFIXES,
    check_suffix,
    values_from_parquet,
    values_from_text,
)

__all__ = ["is_object_uri", "read_s3_dids"]


def is_object_uri(uri: str) -> bool:
    """Whether ``uri`` names one table object (by its suffix) rather than a prefix."""
    return PurePosixPath(uri).suffix.lower() in SUFFIXES


def read_s3_dids(uri: str, column: str, target: AwsTarget) -> Iterator[str]:
    """Yield the DIDs at ``uri`` (see the module docstring).

    Raises ``StorageMissing`` / ``StorageAccessDenied`` naming the bucket or object, and
    ``ConfigError`` for a prefix with no table objects or an object of unknown type.
    """
    bucket = Bucket(uri, target)
    bucket.check_readable()
    if is_object_uri(uri):
        whole = Bucket(f"s3://{bucket.bucket}", target)
        yield from _object(whole, bucket.prefix, column)
        return
    found = False
    for info in bucket.objects(""):
        name = PurePosixPath(info.path).name
        if info.size == 0 or name.startswith(("_", ".")):
            continue
        check_suffix(PurePosixPath(name).suffix.lower(), bucket.uri_of(info.path))
        found = True
        yield from _object(bucket, info.path, column)
    if not found:
        raise ConfigError(
            f"no DID files under {bucket.uri}/ (looked for {', '.join(SUFFIXES)} objects)",
            key="backfill.source.uri",
        )


def _object(bucket: Bucket, path: str, column: str) -> Iterator[str]:
    name = bucket.uri_of(path)
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".parquet":
        with tempfile.TemporaryFile() as spool:
            bucket.download(path, spool)
            spool.seek(0)
            yield from values_from_parquet(spool, column, name)
        return
    body = bucket.open(path)
    # The body downloads as it is read: a connection lost mid-way surfaces here.
    with (
        aws_errors(name, "read"),
        io.TextIOWrapper(body, encoding="utf-8", errors="replace", newline="") as text,
    ):
        yield from values_from_text(text, suffix, column, name)
