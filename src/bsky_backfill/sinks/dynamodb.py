"""DynamoDbSink: the dataset as three DynamoDB tables, staged in a local directory.

Tables (names in :class:`DynamoTables`; the defaults are the original project's)::

    backfill_results        did (HASH), key (RANGE) = "<collection>/<rkey>": one item per
                            record, every column of rows.RECORD_COLUMNS in text form
    backfill_user_metadata  did (HASH), job_id (RANGE): one item per DID and job, its repos
                            row (records_by_collection a map) + batch_id, oversized_records
                            {key: where}
    backfill_metadata       job_id (HASH), finished_at (RANGE): one item per finished run,
                            holding manifest.json

Attributes whose value is None are left out, never stored as NULL. Every key is a string.

DynamoDB has no invisible writes, so a batch is staged on local disk, in ``staging_dir``::

    staged/<batch>.json     a staged batch: its items and supersedes (fsynced, atomic)
    published/<batch>       marker: the batch was published
    manifest.json           written by finish(), deleted by publish()

- ``stage`` writes ``staged/<batch>.json``; DynamoDB is not touched.
- ``publish`` (1) drops the superseded DIDs from old batches still staged (their items
  and their own supersessions), so recovery publishing out of order neither resurrects
  old rows nor deletes newer ones; (2) deletes each superseded DID's record items whose
  key the batch does not hold (keys are per DID, not per batch);
  (3) writes the record items; (4) writes one users item per DID; (5) writes the marker,
  then deletes the staged file. Puts overwrite and deletes of absent keys are no-ops, so a
  ``publish`` repeated after a crash anywhere finishes the job. Readers see each item
  change atomically, not the batch: a batch being published is visible in part.
- ``discard`` deletes the staged file.

Writes use BatchWriteItem, 25 requests each. Throttling errors are retried by botocore
(standard mode, see ``AwsTarget``); items DynamoDB leaves unprocessed are sent again with
exponential backoff and full jitter, and whatever outlasts either raises
``SinkWriteFailed`` naming the table.

Items over DynamoDB's 400 KB limit are never dropped: the item is stored without
``record`` (and, if still too large, without the fields derived from it, such as ``text``),
with ``record_s3_uri`` when an overflow bucket holds the record at
``records/<did>/<collection>/<rkey>.json``, else with ``record_omitted`` giving the size.
Should DynamoDB refuse an item the estimate let through, the chunk is sent again one
item at a time and the refused item is treated the same way. The DID's users item
(``oversized_records``) and the manifest list every such record and where it went.
Overflow objects of deleted items are deleted; one whose record shrank below the limit
on a re-run is left unreferenced.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from bsky_backfill.cloud.aws import AwsTarget, aws_errors
from bsky_backfill.cloud.s3 import Bucket
from bsky_backfill.core.models import RepoResult
from bsky_backfill.errors import SinkWriteFailed, StorageMissing, StorageRefused
from bsky_backfill.sinks.base import Sink, dids_by_batch, write_errors
from bsky_backfill.sinks.durable import make_dirs, remove_tree, write_atomically
from bsky_backfill.sinks.manifest import DatasetInventory, remove_manifest, write_manifest
from bsky_backfill.sinks.rows import RECORD_COLUMNS, REPO_COLUMNS, record_values, repo_values

__all__ = [
    "BATCH_WRITE_LIMIT",
    "ITEM_LIMIT",
    "WRITE_ATTEMPTS",
    "DynamoDbSink",
    "DynamoTables",
    "item_size",
]

ITEM_LIMIT: Final = 400 * 1024
"""DynamoDB's largest item, in bytes: UTF-8 names plus values."""
BATCH_WRITE_LIMIT: Final = 25
"""Requests per BatchWriteItem call."""
WRITE_ATTEMPTS: Final = 12
"""BatchWriteItem calls per chunk before items left unprocessed fail the write."""
_BACKOFF_BASE: Final = 0.05
_BACKOFF_CAP: Final = 5.0
# Derivable from ``record``: dropped too when an item is still too large without it.
_DERIVED: Final = ("text", "subject_uri", "subject_did", "reply_parent_uri", "reply_root_uri")
_OMITTED: Final = "omitted"

_T = TypeVar("_T")
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


@dataclass(frozen=True, slots=True)
class DynamoTables:
    """The three table names. Raises ``ValueError`` if two are the same."""

    records: str = "backfill_results"
    users: str = "backfill_user_metadata"
    runs: str = "backfill_metadata"

    def __post_init__(self) -> None:
        if len({self.records, self.users, self.runs}) < 3:
            raise ValueError(f"the DynamoDB tables need three distinct names, not {self}")

    def key_schemas(self) -> dict[str, tuple[str, ...]]:
        """Each table -> its key attributes (partition key, then sort key), all strings."""
        return {
            self.records: ("did", "key"),
            self.users: ("did", "job_id"),
            self.runs: ("job_id", "finished_at"),
        }


def item_size(item: Mapping[str, str]) -> int:
    """The size DynamoDB counts for an item of string attributes: UTF-8 names + values."""
    return sum(len(name.encode()) + len(value.encode()) for name, value in item.items())


@dataclass(slots=True)
class _Batch:
    """A staged batch, as its staging file holds it."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    """DID -> its users item (oversized_records added at publish)."""
    records: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """DID -> its record items (unique keys; a DID given twice keeps its last result)."""
    supersedes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, batch_id: str, job_id: str, results: Sequence[RepoResult], supersedes: dict[str, str]
    ) -> _Batch:
        batch = cls(supersedes=dict(supersedes))
        for result in results:
            user: dict[str, Any] = dict(zip(REPO_COLUMNS, repo_values(result.repo), strict=True))
            user |= {
                "job_id": job_id,
                "batch_id": batch_id,
                "records_by_collection": dict(result.repo.records_by_collection),
            }
            batch.users[result.repo.did] = {k: v for k, v in user.items() if v is not None}
            # One request may not put a key twice: the last row of a key wins.
            by_key: dict[str, dict[str, str]] = {}
            for row in result.records:
                values = zip(RECORD_COLUMNS, record_values(row), strict=True)
                item = {column: value for column, value in values if value is not None}
                item["key"] = f"{row.collection}/{row.rkey}"
                by_key[item["key"]] = item
            batch.records[result.repo.did] = list(by_key.values())
        return batch

    def without(self, dids: set[str]) -> _Batch:
        """This batch without anything of ``dids``."""
        return _Batch(
            {did: user for did, user in self.users.items() if did not in dids},
            {did: items for did, items in self.records.items() if did not in dids},
            {did: old for did, old in self.supersedes.items() if did not in dids},
        )

    def dump(self) -> bytes:
        parts = {"users": self.users, "records": self.records, "supersedes": self.supersedes}
        return json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def load(cls, path: Path) -> _Batch:
        parts = json.loads(path.read_bytes())
        return cls(parts["users"], parts["records"], parts["supersedes"])


class DynamoDbSink(Sink):
    """Writes the dataset into DynamoDB ``tables``; see the module docstring.

    ``staging_dir`` is a local directory kept across restarts (one per dataset): it holds
    staged batches. ``job_id`` goes into every users item (DIDs without records have no
    other). ``overflow`` stores records too large for an item. ``write_attempts`` and
    ``sleep`` bound and pace the retries of unprocessed items. Call :meth:`check` before a
    job starts.
    """

    format = "dynamodb"

    def __init__(
        self,
        tables: DynamoTables,
        target: AwsTarget,
        *,
        job_id: str,
        staging_dir: Path,
        overflow: Bucket | None = None,
        write_attempts: int = WRITE_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(f"dynamodb:{tables.records}")
        self.tables = tables
        self.job_id = job_id
        self.staging_dir = Path(staging_dir)
        self.overflow = overflow
        self._attempts = write_attempts
        self._sleep = sleep
        self._client = target.client("dynamodb")

    # -- preflight ----------------------------------------------------------------------

    def check(self, *, create_tables: bool = False) -> None:
        """Preflight: every table exists (or is created, with ``create_tables``) with the
        expected keys and takes a write; the overflow bucket too; the staging directory
        can be made.

        Raises ``StorageMissing`` (no such table or bucket), ``StorageRefused`` (wrong
        key schema), ``StorageAccessDenied``, or ``SinkWriteFailed``, each naming it.
        """
        with self._lock:
            with write_errors(self.staging_dir):
                make_dirs(self._staged_dir)
            for table, keys in self.tables.key_schemas().items():
                self._prepare_table(table, keys, create_tables)
            if self.overflow is not None:
                self.overflow.check_writable()

    def _prepare_table(self, table: str, keys: tuple[str, ...], create: bool) -> None:
        resource = f"dynamodb:{table}"
        try:
            with aws_errors(resource, "describe"):
                description = self._client.describe_table(TableName=table)["Table"]
        except StorageMissing:
            if not create:
                raise StorageMissing(
                    f"DynamoDB table {table} does not exist ({resource}): create it, or set"
                    " create_tables: true in the storage config",
                    resource=resource,
                ) from None
            description = self._create_table(table, keys)
        else:
            _check_keys(table, description, keys)
        if description["TableStatus"] != "ACTIVE":
            with aws_errors(resource, "wait for"):
                self._client.get_waiter("table_exists").wait(
                    TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
                )
        probe = {name: {"S": f"_preflight/{uuid.uuid4().hex}"} for name in keys}
        with aws_errors(resource, "write to", writing=True):
            self._client.put_item(TableName=table, Item=probe)
            self._client.delete_item(TableName=table, Key=probe)

    def _create_table(self, table: str, keys: tuple[str, ...]) -> dict[str, Any]:
        with aws_errors(f"dynamodb:{table}", "create"):
            try:
                answer = self._client.create_table(
                    TableName=table,
                    KeySchema=[
                        {"AttributeName": k, "KeyType": t}
                        for k, t in zip(keys, ("HASH", "RANGE"), strict=False)
                    ],
                    AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as e:
                # Another worker's preflight created it first: wait for it like ours.
                if _error_code(e) != "ResourceInUseException":
                    raise
                return {"TableStatus": "CREATING"}
            description: dict[str, Any] = answer["TableDescription"]
            return description

    # -- protocol -----------------------------------------------------------------------

    @contextmanager
    def _failures(self) -> Iterator[None]:
        with write_errors(self.staging_dir), aws_errors(self.location, "write to", writing=True):
            yield

    @property
    def _staged_dir(self) -> Path:
        return self.staging_dir / "staged"

    def _staged(self, batch_id: str) -> Path:
        return self._staged_dir / f"{batch_id}.json"

    def _marker(self, batch_id: str) -> Path:
        return self.staging_dir / "published" / batch_id

    def _is_published(self, batch_id: str) -> bool:
        return self._marker(batch_id).exists()

    def _stage(
        self, batch_id: str, results: Sequence[RepoResult], supersedes: dict[str, str]
    ) -> None:
        make_dirs(self._staged_dir)
        batch = _Batch.of(batch_id, self.job_id, results, supersedes)
        write_atomically(self._staged(batch_id), batch.dump())

    def _publish(self, batch_id: str) -> None:
        staged = self._staged(batch_id)
        if self._is_published(batch_id):
            remove_tree(staged)  # a crash between marking and removing left it
            return
        if not staged.exists():
            return
        remove_manifest(self.staging_dir)
        batch = _Batch.load(staged)
        self._unstage_superseded(batch.supersedes)
        for did in sorted(batch.supersedes):
            self._delete_stale(did, {item["key"] for item in batch.records.get(did, ())})
        oversized = self._put_records([i for items in batch.records.values() for i in items])
        users = [
            user | ({"oversized_records": oversized[did]} if did in oversized else {})
            for did, user in batch.users.items()
        ]
        with self._writing(self.tables.users):
            self._write_all(self.tables.users, [_put(user) for user in users])
        make_dirs(self._marker(batch_id).parent)
        write_atomically(self._marker(batch_id), b"")
        remove_tree(staged)

    def _discard(self, batch_id: str) -> None:
        remove_tree(self._staged(batch_id))

    def _staged_batches(self) -> set[str]:
        if not self._staged_dir.is_dir():
            return set()
        return {path.stem for path in self._staged_dir.glob("*.json")}

    # -- publish steps ------------------------------------------------------------------

    def _unstage_superseded(self, supersedes: Mapping[str, str]) -> None:
        """Step 1: drop superseded DIDs from the old batches still staged."""
        for old, dids in sorted(dids_by_batch(supersedes).items()):
            path = self._staged(old)
            if path.exists() and set(dids) & (old_batch := _Batch.load(path)).users.keys():
                write_atomically(path, old_batch.without(set(dids)).dump())

    def _delete_stale(self, did: str, keep: set[str]) -> None:
        """Step 2: delete this job's record items of ``did`` whose key is not in ``keep``,
        and the overflow objects they point at (objects first: a repeat still finds the
        items). Items another job wrote last stay: jobs may share the table."""
        table = self.tables.records
        with self._writing(table):
            stale = [
                (key, at)
                for key, at, job in self._record_keys(did)
                if key not in keep and job == self.job_id
            ]
            if self.overflow is not None:
                ours = [k for k, at in stale if at == self.overflow.uri_of(_overflow_path(did, k))]
                self.overflow.delete(_overflow_path(did, key) for key in ours)
            self._write_all(table, [_delete(did, key) for key, _ in stale])

    def _record_keys(self, did: str) -> Iterator[tuple[str, str | None, str | None]]:
        """``(key, record_s3_uri or None, job_id)`` of every record item of ``did``."""
        pages = self._client.get_paginator("query").paginate(
            TableName=self.tables.records,
            KeyConditionExpression="#d = :d",
            ProjectionExpression="#k, record_s3_uri, #j",
            ExpressionAttributeNames={"#d": "did", "#k": "key", "#j": "job_id"},
            ExpressionAttributeValues={":d": {"S": did}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page["Items"]:
                yield (
                    item["key"]["S"],
                    item.get("record_s3_uri", {}).get("S"),
                    item.get("job_id", {}).get("S"),
                )

    def _put_records(self, items: Sequence[dict[str, str]]) -> dict[str, dict[str, str]]:
        """Step 3: write record items; return the oversized ones, DID -> {key: where}."""
        oversized: dict[str, dict[str, str]] = {}
        table = self.tables.records
        with self._writing(table):
            for chunk in _chunks(items):
                fitted = [self._fit(item, oversized) for item in chunk]
                try:
                    self._batch_write(table, [_put(item) for item in fitted])
                except ClientError as e:
                    if not _item_too_large(e):
                        raise
                    # An item DynamoDB counts larger than item_size did: find it alone.
                    for item in fitted:
                        self._put_record_alone(item, oversized)
        return oversized

    def _put_record_alone(self, item: dict[str, str], oversized: dict[str, dict[str, str]]) -> None:
        try:
            self._batch_write(self.tables.records, [_put(item)])
        except ClientError as e:
            if not _item_too_large(e) or "record" not in item:
                raise
            self._batch_write(self.tables.records, [_put(self._fit(item, oversized, force=True))])

    def _fit(
        self, item: dict[str, str], oversized: dict[str, dict[str, str]], *, force: bool = False
    ) -> dict[str, str]:
        """``item`` if it fits in DynamoDB; else without its record, which goes to the
        overflow bucket if there is one, and recorded in ``oversized``."""
        size = item_size(item)
        if size <= ITEM_LIMIT and not force:
            return item
        smaller = {name: value for name, value in item.items() if name != "record"}
        if self.overflow is not None:
            path = _overflow_path(item["did"], item["key"])
            self.overflow.put(path, item["record"].encode())
            where = smaller["record_s3_uri"] = self.overflow.uri_of(path)
        else:
            where = _OMITTED
            smaller["record_omitted"] = (
                f"the item is about {size} bytes, over DynamoDB's item size limit, and no"
                " overflow bucket is configured"
            )
        if item_size(smaller) > ITEM_LIMIT:
            smaller = {name: value for name, value in smaller.items() if name not in _DERIVED}
        oversized.setdefault(item["did"], {})[item["key"]] = where
        return smaller

    # -- writes -------------------------------------------------------------------------

    def _writing(self, table: str) -> AbstractContextManager[None]:
        return aws_errors(f"dynamodb:{table}", "write to", writing=True)

    def _write_all(self, table: str, requests: Sequence[dict[str, Any]]) -> None:
        for chunk in _chunks(requests):
            self._batch_write(table, chunk)

    def _batch_write(self, table: str, requests: Sequence[dict[str, Any]]) -> None:
        """One BatchWriteItem of ``requests`` into ``table``, sending what DynamoDB leaves
        unprocessed (throttled) again with exponential backoff and full jitter.

        Raises ``SinkWriteFailed`` if items are still unprocessed after every attempt.
        """
        pending: dict[str, Any] = {table: list(requests)}
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(
                    random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)))
                )
            pending = self._client.batch_write_item(RequestItems=pending).get("UnprocessedItems")
            if not pending:
                return
        left = sum(len(unprocessed) for unprocessed in pending.values())
        raise SinkWriteFailed(
            f"cannot write to dynamodb:{table}: {left} of {len(requests)} items still"
            f" unprocessed after {self._attempts} attempts (throttled: raise the table's"
            " capacity or switch it to on-demand)",
            path=f"dynamodb:{table}",
        )

    # -- manifest -----------------------------------------------------------------------

    def _inventory(self) -> DatasetInventory:
        by_status: Counter[str] = Counter()
        by_collection: Counter[str] = Counter()
        oversized = []
        for user in self._job_users():
            by_status[user["status"]] += 1
            counts = user.get("records_by_collection", {})
            by_collection.update({collection: int(n) for collection, n in counts.items()})
            for key, where in user.get("oversized_records", {}).items():
                oversized.append({"uri": f"at://{user['did']}/{key}", "stored": where})
        extra = {
            "tables": {
                "records": self.tables.records,
                "users": self.tables.users,
                "runs": self.tables.runs,
            },
            "oversized_records": sorted(oversized, key=lambda entry: entry["uri"]),
        }
        return DatasetInventory((), dict(by_collection), dict(by_status), extra)

    def _job_users(self) -> Iterator[dict[str, Any]]:
        """The users items of this job (status, counts, oversized records)."""
        with aws_errors(f"dynamodb:{self.tables.users}", "read"):
            pages = self._client.get_paginator("scan").paginate(
                TableName=self.tables.users,
                FilterExpression="#j = :j",
                ProjectionExpression="#d, #s, #c, #o",
                ExpressionAttributeNames={
                    "#j": "job_id",
                    "#d": "did",
                    "#s": "status",
                    "#c": "records_by_collection",
                    "#o": "oversized_records",
                },
                ExpressionAttributeValues={":j": {"S": self.job_id}},
                ConsistentRead=True,
            )
            for page in pages:
                for item in page["Items"]:
                    yield {name: _deserializer.deserialize(v) for name, v in item.items()}

    def _write_manifest(self, document: bytes) -> str:
        write_manifest(self.staging_dir, document)
        fields = json.loads(document)
        item: dict[str, Any] = {
            name: fields[name]
            for name in ("job_id", "started_at", "finished_at", "config_sha256", "counts")
        }
        item["format"] = self.format
        # The counts map and the short fields stay well under 4 KB.
        if len(document) + 4096 <= ITEM_LIMIT:
            item["manifest"] = document.decode()
        elif self.overflow is not None:
            path = f"manifests/{fields['job_id']}/{fields['finished_at']}.json"
            self.overflow.put(path, document)
            item["manifest_s3_uri"] = self.overflow.uri_of(path)
        else:
            item["manifest_omitted"] = f"{len(document)} bytes, over DynamoDB's item limit"
        with self._writing(self.tables.runs):
            self._client.put_item(TableName=self.tables.runs, Item=_to_dynamo(item))
        return f"dynamodb:{self.tables.runs}/{fields['job_id']}"


def _to_dynamo(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in item.items()}


def _put(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"PutRequest": {"Item": _to_dynamo(item)}}


def _delete(did: str, key: str) -> dict[str, Any]:
    return {"DeleteRequest": {"Key": {"did": {"S": did}, "key": {"S": key}}}}


def _overflow_path(did: str, key: str) -> str:
    return f"records/{did}/{key}.json"


def _chunks(items: Sequence[_T], size: int = BATCH_WRITE_LIMIT) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _item_too_large(error: ClientError) -> bool:
    """DynamoDB refused an item over its size limit. Only the message tells this
    ValidationException from the others ("Item size has exceeded ...")."""
    message = str(error.response.get("Error", {}).get("Message", ""))
    return _error_code(error) == "ValidationException" and "item size" in message.lower()


def _check_keys(table: str, description: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Raise ``StorageRefused`` unless the table's key schema is ``keys``, all strings."""
    types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
    found = [
        (k["AttributeName"], types.get(k["AttributeName"]))
        for k in sorted(description["KeySchema"], key=lambda k: str(k["KeyType"]))
    ]
    if found != [(name, "S") for name in keys]:
        shown = ", ".join(f"{name} ({kind})" for name, kind in found)
        raise StorageRefused(
            f"DynamoDB table {table} has the keys {shown}; bsky-backfill needs"
            f" {' + '.join(keys)}, all strings (S): use another table name or recreate it",
            resource=f"dynamodb:{table}",
        )
