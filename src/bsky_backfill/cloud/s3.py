"""One S3 bucket and key prefix, as the sinks and the S3 source use it.

Paths given to :class:`Bucket` are relative to its prefix and use ``/``. Uploads go
through boto3's transfer manager: a body over ``MULTIPART_THRESHOLD`` is sent as a
multipart upload (parts of ``PART_SIZE``, in parallel), which S3 makes visible only when
complete, so a reader sees the whole object or nothing. Every failure is translated by
:func:`~bsky_backfill.cloud.aws.aws_errors` and names the object.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Final

from boto3.s3.transfer import TransferConfig

from bsky_backfill.cloud.aws import AwsTarget, aws_errors, split_s3_uri
from bsky_backfill.errors import StorageMissing, StorageRefused

__all__ = ["MULTIPART_THRESHOLD", "PART_SIZE", "Bucket", "ObjectInfo"]

MULTIPART_THRESHOLD: Final = 16 * 1024 * 1024
PART_SIZE: Final = 16 * 1024 * 1024
_DELETE_CHUNK: Final = 1000  # DeleteObjects' limit


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object under the prefix: ``path`` relative to it, ``size`` in bytes."""

    path: str
    size: int


class Bucket:
    """Objects under ``s3://bucket/prefix`` (``uri``), through one thread-safe client."""

    def __init__(
        self,
        uri: str,
        target: AwsTarget,
        *,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
    ) -> None:
        self.bucket, prefix = split_s3_uri(uri)
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client = target.client("s3")
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=part_size,
            max_concurrency=4,
        )

    def key(self, path: str) -> str:
        """The object key of ``path`` (relative to the prefix)."""
        return f"{self.prefix}/{path}" if self.prefix else path

    def uri_of(self, path: str) -> str:
        """``s3://bucket/key`` of ``path``, for messages and pointers."""
        return f"s3://{self.bucket}/{self.key(path)}"

    def put(self, path: str, body: bytes | IO[bytes], metadata: Mapping[str, str] = {}) -> None:
        """Upload ``body`` to ``path`` (multipart when large), with user ``metadata``."""
        stream = io.BytesIO(body) if isinstance(body, bytes) else body
        extra = {"Metadata": dict(metadata)} if metadata else None
        with aws_errors(self.uri_of(path), "write", writing=True):
            self._client.upload_fileobj(
                stream, self.bucket, self.key(path), ExtraArgs=extra, Config=self._transfer
            )

    def get(self, path: str) -> bytes:
        """The whole body of ``path``; ``StorageMissing`` if there is none."""
        with aws_errors(self.uri_of(path), "read"):
            return bytes(
                self._client.get_object(Bucket=self.bucket, Key=self.key(path))["Body"].read()
            )

    def open(self, path: str) -> IO[bytes]:
        """A binary stream of ``path``'s body, read as it is consumed."""
        with aws_errors(self.uri_of(path), "read"):
            body: IO[bytes] = self._client.get_object(Bucket=self.bucket, Key=self.key(path))[
                "Body"
            ]
            return body

    def download(self, path: str, into: IO[bytes]) -> None:
        """Write ``path``'s body into the file ``into`` (ranged parts in parallel when large)."""
        with aws_errors(self.uri_of(path), "read"):
            self._client.download_fileobj(self.bucket, self.key(path), into, Config=self._transfer)

    def metadata(self, path: str) -> dict[str, str] | None:
        """The user metadata of ``path``, or None when there is no such object."""
        try:
            with aws_errors(self.uri_of(path), "read"):
                head = self._client.head_object(Bucket=self.bucket, Key=self.key(path))
        except StorageMissing:
            return None
        return dict(head.get("Metadata", {}))

    def exists(self, path: str) -> bool:
        """Whether ``path`` is an object."""
        return self.metadata(path) is not None

    def copy(self, src: str, dest: str) -> None:
        """Server-side copy of ``src`` to ``dest`` with its user metadata (also when the
        copy is multipart). ``StorageMissing`` if ``src`` is gone."""
        metadata = self.metadata(src)
        if metadata is None:
            raise StorageMissing(
                f"cannot copy {self.uri_of(src)}: it does not exist", resource=self.uri_of(src)
            )
        with aws_errors(self.uri_of(dest), "write", writing=True):
            self._client.copy(
                {"Bucket": self.bucket, "Key": self.key(src)},
                self.bucket,
                self.key(dest),
                ExtraArgs={"Metadata": metadata, "MetadataDirective": "REPLACE"},
                Config=self._transfer,
            )

    def delete(self, paths: Iterable[str]) -> None:
        """Delete the objects at ``paths`` (missing ones are fine)."""
        keys = [self.key(p) for p in paths]
        for start in range(0, len(keys), _DELETE_CHUNK):
            chunk = keys[start : start + _DELETE_CHUNK]
            with aws_errors(self.uri_of(chunk[0]), "delete", writing=True):
                answer = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            if errors := answer.get("Errors"):
                first = errors[0]
                raise StorageRefused(
                    f"cannot delete s3://{self.bucket}/{first.get('Key')}: "
                    f"{first.get('Code')}: {first.get('Message')} ({len(errors)} failed)",
                    resource=f"s3://{self.bucket}/{first.get('Key')}",
                )

    def objects(self, under: str = "") -> Iterator[ObjectInfo]:
        """Every object whose path starts with ``under``, in key order."""
        yield from (info for page in self._pages(under) for info in _objects(self, page))

    def folders(self, under: str) -> list[str]:
        """The immediate "sub-folders" of ``under`` (which should end with ``/``), as paths."""
        found = []
        for page in self._pages(under, delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                found.append(self._relative(common["Prefix"]).rstrip("/"))
        return found

    def check_writable(self) -> None:
        """Preflight: the bucket exists and the credentials may write and delete under the
        prefix. Raises ``StorageMissing`` / ``StorageAccessDenied`` naming it."""
        with aws_errors(f"s3://{self.bucket}", "use the bucket"):
            self._client.head_bucket(Bucket=self.bucket)
        probe = f"_preflight/{uuid.uuid4().hex}"
        self.put(probe, b"bsky-backfill preflight: safe to delete\n")
        self.delete([probe])

    def check_readable(self) -> None:
        """Preflight for reading: the bucket exists and may be listed."""
        with aws_errors(f"s3://{self.bucket}", "use the bucket"):
            self._client.head_bucket(Bucket=self.bucket)

    def _pages(self, under: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        arguments = {"Bucket": self.bucket, "Prefix": self.key(under) if under else self._root()}
        if delimiter:
            arguments["Delimiter"] = delimiter
        with aws_errors(self.uri_of(under), "list"):
            yield from paginator.paginate(**arguments)

    def _root(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _relative(self, key: str) -> str:
        return key[len(self._root()) :]


def _objects(bucket: Bucket, page: Mapping[str, Any]) -> Iterator[ObjectInfo]:
    for item in page.get("Contents", []):
        yield ObjectInfo(bucket._relative(item["Key"]), int(item["Size"]))
