"""Read a repo export (a CAR from ``com.atproto.sync.getRepo``) into verified records.

``read_repo`` checks the commit eagerly — version, DID, rev, and with ``verify="full"`` its
signature — and returns a :class:`Repo` whose ``records`` walks the MST lazily, so a huge
repo read from a file streams with bounded memory. Errors during that walk (a missing,
corrupt or malformed block) are raised by the iteration.

Verification levels:
- ``full``: every block used is hash-checked, the commit signature verified against
  ``signing_key``, and the MST checked including every key's layer;
- ``hashes``: blocks hash-checked and the MST shape checked, no signature;
- ``none``: no hashes and no signature; the MST shape and key order are still checked
  (they are what makes the record list exact).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from itertools import chain
from typing import Any, Literal, NamedTuple

import cbrrr

from bsky_backfill.atproto.car import CarLimits, CarStore, MemoryCar, check_block, open_car
from bsky_backfill.atproto.cbor import decode_commit_block, decode_record, encode_dag_cbor, to_json
from bsky_backfill.atproto.cid import CODEC_DAG_CBOR, cid_to_str
from bsky_backfill.atproto.crypto import verify_signature
from bsky_backfill.atproto.mst import KeyRanges, walk_mst_runs
from bsky_backfill.atproto.native import fastrepo
from bsky_backfill.atproto.syntax import is_valid_did, is_valid_tid
from bsky_backfill.errors import BadSignature, InvalidCommit, MalformedBlock

__all__ = ["Commit", "RecordParts", "Repo", "RepoRecord", "Verify", "read_repo"]

_ROWS_CHUNK = 4096  # records converted per call into C: bounds the list it returns

Verify = Literal["full", "hashes", "none"]
_VERIFY_LEVELS: frozenset[str] = frozenset({"full", "hashes", "none"})


class RepoRecord(NamedTuple):
    """One record: where it lives, its CID and its decoded value.

    ``value`` is the record as decoded DAG-CBOR: links are ``bsky_backfill.atproto.cid.CID``,
    byte strings ``bytes`` (``bsky_backfill.atproto.cbor.to_json`` gives the atproto JSON).
    """

    collection: str
    rkey: str
    cid_bytes: bytes
    value: dict[str, Any]

    @property
    def cid(self) -> str:
        """The record's CID as a string (``bafyrei...``)."""
        return cid_to_str(self.cid_bytes)

    def uri(self, did: str) -> str:
        """The record's AT-URI in the repo of ``did``."""
        return f"at://{did}/{self.collection}/{self.rkey}"


_new_record = tuple.__new__


class RecordParts(NamedTuple):
    """One record as the dataset needs it: its place, CID, atproto JSON, and the fields
    copied out of it (each None unless present and a string; ``created_at`` is the raw
    ``createdAt`` value, whatever its type). Built in C where it can be, else in Python:
    the two give the same tuple, but that the C reader also fills ``created_moment``:
    ``createdAt`` parsed, when written in the common form ``YYYY-MM-DDTHH:MM:SS[.f]Z``
    (None otherwise, and always from Python: ``syntax.parse_datetime`` reads it)."""

    collection: str
    rkey: str
    uri: str
    cid_bytes: bytes
    cid: str
    json: str
    created_at: Any
    text: str | None
    reply_parent_uri: str | None
    reply_root_uri: str | None
    subject_uri: str | None
    subject_did: str | None
    created_moment: datetime | None = None

    @classmethod
    def of(cls, record: RepoRecord, did: str) -> RecordParts:
        """The parts of a decoded record (the Python path)."""
        value = record.value
        subject = value.get("subject")
        reply = value.get("reply")
        return _new_record(
            cls,
            (
                record.collection,
                record.rkey,
                record.uri(did),
                record.cid_bytes,
                record.cid,
                _record_json(record),
                value.get("createdAt"),
                _str(value.get("text")),
                _str(_get(reply, "parent", "uri")),
                _str(_get(reply, "root", "uri")),
                _str(_get(subject, "uri")),
                _str(subject),
                None,
            ),
        )


def _get(value: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _record_json(record: RepoRecord) -> str:
    """The record as JSON. A record nested deeper than JSON encoding can go is valid
    DAG-CBOR but cannot be written: the repo fails (as a malformed one would)."""
    try:
        return to_json(record.value)
    except RecursionError:
        raise MalformedBlock(
            f"record {record.collection}/{record.rkey} nests too deep to be written as JSON"
        ) from None


@dataclass(frozen=True)
class Commit:
    """The signed commit at the root of a repo export."""

    did: str
    rev: str
    version: int
    data_cid: bytes
    prev_cid: bytes | None
    cid: bytes

    @functools.cached_property
    def cid_str(self) -> str:
        return cid_to_str(self.cid)


class Repo:
    """A verified repo export. Iterate ``records`` (again and again); ``close()`` when done.

    Owns the CAR store: closing the repo closes an underlying file.
    """

    def __init__(
        self,
        store: CarStore,
        commit: Commit,
        *,
        collections: Iterable[str] | None,
        verify: Verify,
        native: bool = True,
    ) -> None:
        self._store = store
        self.commit = commit
        self.verify: Verify = verify
        self._wanted = KeyRanges(collections) if collections is not None else None
        self._native = native

    @property
    def did(self) -> str:
        return self.commit.did

    @property
    def rev(self) -> str:
        return self.commit.rev

    @property
    def commit_cid(self) -> str:
        return self.commit.cid_str

    @property
    def size(self) -> int:
        """Bytes in the CAR."""
        return self._store.size

    @property
    def block_count(self) -> int:
        """Distinct blocks in the CAR (used or not)."""
        return len(self._store)

    @property
    def records(self) -> Iterator[RepoRecord]:
        """The records in key order (collection, then rkey); a fresh iterator each time."""
        return self._iter_records()

    def record_parts(self) -> Iterator[RecordParts]:
        """The records in key order as :class:`RecordParts`, read by the C reader where
        it applies (a CAR in memory, compiled here, ``native``) and in Python otherwise."""
        chunks = self._native_parts() if self._native else None
        if chunks is None:
            did = self.did
            return (RecordParts.of(record, did) for record in self._iter_records())
        return chain.from_iterable(chunks)

    def _native_parts(self) -> Iterator[list[RecordParts]] | None:
        store = self._store
        if fastrepo is None or not isinstance(store, MemoryCar) or store.table is None:
            return None
        check = self.verify != "none"
        ranges = self._wanted.ranges if self._wanted is not None else None
        records = fastrepo.walk(
            store.data, store.table, self.commit.data_cid, check, self.verify == "full", ranges
        )
        if records is None:  # unusual or invalid: the Python walk reads it, or names the fault
            return None
        return self._native_chunks(fastrepo.rows, store.data, store.table, records, check)

    def _native_chunks(
        self,
        rows: Callable[..., tuple[list[RecordParts], int]],
        data: bytes,
        table: bytes,
        records: bytes,
        check: bool,
    ) -> Iterator[list[RecordParts]]:
        did = self.did
        pos = 0
        while pos < len(records):
            chunk, pos = rows(RecordParts, data, table, did, records, pos, _ROWS_CHUNK, check)
            for i, parts in enumerate(chunk):
                if parts.json is None:  # missing, corrupt or unusual: read in Python
                    record = self._record(parts.collection, parts.rkey, parts.cid_bytes)
                    chunk[i] = RecordParts.of(record, did)
            yield chunk

    def _record(self, collection: str, rkey: str, cid: bytes) -> RepoRecord:
        data = self._store.get(cid)
        if self.verify != "none" and cid[4:] != sha256(data).digest():
            check_block(cid, data)  # to raise (or for a CID that is not sha2-256)
        # tuple.__new__ skips NamedTuple's Python-level __new__: a third of a record's cost.
        return _new_record(RepoRecord, (collection, rkey, cid, decode_record(data, cid)))

    def _fetch(self, cid: bytes) -> bytes:
        data = self._store.get(cid)
        # Inline sha256 compare; check_block only to raise (or for non-sha256 CIDs).
        if self.verify != "none" and cid[4:] != sha256(data).digest():
            check_block(cid, data)
        return data

    def _iter_records(self) -> Iterator[RepoRecord]:
        last_prefix, collection = b"", ""
        runs = walk_mst_runs(
            self._fetch,
            self.commit.data_cid,
            wanted=self._wanted,
            check_layers=self.verify == "full",
        )
        for key, cid in chain.from_iterable(runs):
            slash = key.index(b"/")
            if key[:slash] != last_prefix:  # keys come sorted: collections in runs
                last_prefix = key[:slash]
                collection = last_prefix.decode("ascii")
            yield self._record(collection, key[slash + 1 :].decode("ascii"), cid)

    def close(self) -> None:
        """Release the CAR (closes a file-backed store). Idempotent."""
        self._store.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_repo(
    car: bytes | str | os.PathLike[str],
    *,
    signing_key: str | None = None,
    did: str | None = None,
    collections: Iterable[str] | None = None,
    verify: Verify | str = "full",
    limits: CarLimits = CarLimits(),
    native: bool = True,
) -> Repo:
    """Open a repo export and verify its commit; records are read when iterated.

    ``car``: the CAR as bytes, or a path (read without loading the file whole).
    ``signing_key``: ``did:key:z...`` or a ``z...`` multikey; required for ``verify="full"``.
    ``did``: when given, the commit must be for this DID.
    ``collections``: only records of these NSIDs; other subtrees are never read.
    ``native``: use the C reader where it applies (False: Python only, the reference).

    Raises ``TruncatedRepo`` (retryable) when the CAR lacks a block it needs, and an
    ``InvalidRepo`` subclass for a corrupt or forged repo (``CorruptBlock``, ``BadSignature``,
    ``InvalidCommit``, ``MalformedCar``, ``MalformedBlock``, ``MalformedMst``),
    ``RepoTooLarge`` over ``limits``; ``ValueError`` for a bad ``verify`` or a missing key.
    """
    if verify not in _VERIFY_LEVELS:
        raise ValueError(f"verify must be one of full, hashes, none (got {verify!r})")
    if verify == "full" and signing_key is None:
        raise ValueError('verify="full" needs the signing_key from the DID document')
    if collections is not None and isinstance(collections, str):
        collections = [collections]
    store = open_car(car, limits, native=native)
    try:
        commit, fields = _read_commit(store, verify)
        if did is not None and commit.did != did:
            raise InvalidCommit(f"the commit is for {commit.did}, not {did}", did=did)
        if verify == "full":
            assert signing_key is not None
            _check_signature(commit, fields, signing_key)
    except BaseException:
        store.close()
        raise
    return Repo(
        store,
        commit,
        collections=collections,
        verify=verify,  # type: ignore[arg-type]
        native=native,
    )


def _read_commit(store: CarStore, verify: str) -> tuple[Commit, dict[str, Any]]:
    """The root commit, checked against the spec, and its decoded fields."""
    root = store.roots[0]
    data = store.get(root)
    if verify != "none":
        check_block(root, data)
    fields = decode_commit_block(data, root)
    did, version, rev = fields.get("did"), fields.get("version"), fields.get("rev")
    data_cid, prev = fields.get("data"), fields.get("prev", None)
    if version != 3:
        raise InvalidCommit(f"unsupported repo commit version {version!r} (expected 3)")
    if not isinstance(did, str) or not is_valid_did(did):
        raise InvalidCommit(f"the commit's did {did!r} is not a valid DID")
    if not isinstance(rev, str) or not is_valid_tid(rev):
        raise InvalidCommit(f"the commit's rev {rev!r} is not a TID", did=did)
    if not isinstance(data_cid, cbrrr.CID) or data_cid.cid_bytes[:2] != bytes((1, CODEC_DAG_CBOR)):
        raise InvalidCommit("the commit's data is not a DAG-CBOR CID link", did=did)
    if "prev" not in fields or not (prev is None or isinstance(prev, cbrrr.CID)):
        raise InvalidCommit("the commit's prev must be present, null or a CID link", did=did)
    if not isinstance(fields.get("sig"), bytes):
        raise InvalidCommit("the commit has no signature bytes", did=did)
    commit = Commit(
        did=did,
        rev=rev,
        version=version,
        data_cid=data_cid.cid_bytes,
        prev_cid=prev.cid_bytes if prev is not None else None,
        cid=root,
    )
    return commit, fields


def _check_signature(commit: Commit, fields: dict[str, Any], signing_key: str) -> None:
    """The signature covers the commit's DAG-CBOR without its ``sig`` field."""
    unsigned_fields = {k: v for k, v in fields.items() if k != "sig"}
    try:
        unsigned = encode_dag_cbor(unsigned_fields)
    except (ValueError, TypeError) as exc:
        raise MalformedBlock(f"the commit cannot be re-encoded: {exc}", did=commit.did) from None
    if not verify_signature(signing_key, unsigned, fields["sig"]):
        raise BadSignature(
            f"the commit {commit.cid_str} is not signed by {signing_key}", did=commit.did
        )
