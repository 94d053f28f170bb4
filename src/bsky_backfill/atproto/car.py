"""CAR v1 files: framing, a block index, and hash checks.

A CAR is a varint-prefixed DAG-CBOR header ``{version: 1, roots: [CID]}`` followed by
varint-prefixed ``CID + block`` frames. Blocks come in any order, may repeat (the first
copy wins) and may be unreferenced; nothing is decoded here. Blocks are looked up by their
binary CID and hash-checked on use, so a filtered read never touches the rest.

Two stores share one scanner: :class:`MemoryCar` over ``bytes`` (the C reader's block
table, or a ``dict`` index where the C parts are not compiled) and :class:`FileCar`,
which reads a file in chunks to build an offset index and then fetches blocks with
``pread`` — the file is never held in memory whole, and its index is compact
(:class:`CompactIndex`, ~20 bytes per block instead of a ``dict``'s ~170: a 1 GB repo
has ~4 million blocks).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from hashlib import sha256
from pathlib import Path
from typing import Any, Final, Literal

import libipld

from bsky_backfill.atproto.cid import SHA2_256, cid_to_str, parse_cid_bytes, read_varint
from bsky_backfill.atproto.native import fastrepo
from bsky_backfill.errors import CorruptBlock, MalformedCar, RepoTooLarge, TruncatedRepo

__all__ = [
    "CarLimits",
    "CarStore",
    "CompactIndex",
    "FileCar",
    "MemoryCar",
    "check_block",
    "open_car",
]

_OFFSET_SHIFT: Final = 32  # index values pack (offset << 32) | length in one int
_LENGTH_MASK: Final = (1 << _OFFSET_SHIFT) - 1
_FAST_CID_LEN: Final = 36  # CIDv1, one-byte codec, sha2-256: every block of a real repo
# CIDv1 + DAG-CBOR or raw + sha2-256/32: checked with one startswith call per frame.
_FAST_CID_PREFIXES: Final = (b"\x01\x71\x12\x20", b"\x01\x55\x12\x20")


@dataclass(frozen=True, slots=True)
class CarLimits:
    """Caps that keep a hostile CAR from exhausting memory or time.

    ``max_total_bytes``: the whole CAR (``RepoTooLarge`` beyond it).
    ``max_block_bytes``: one frame (``MalformedCar`` beyond it); real records are < 1 MiB.
    ``chunk_bytes``: how much of a file is read at a time while indexing.
    """

    max_total_bytes: int = 2 * 1024**3
    max_block_bytes: int = 2 * 1024**2
    chunk_bytes: int = 4 * 1024**2

    def __post_init__(self) -> None:
        if not 0 < self.max_block_bytes <= _LENGTH_MASK:
            raise ValueError(f"max_block_bytes must be in 1..{_LENGTH_MASK}")


def check_block(cid: bytes, data: bytes) -> None:
    """Raise ``CorruptBlock`` unless ``data`` hashes to the sha2-256 digest in ``cid``."""
    if len(cid) == _FAST_CID_LEN and cid[2] == SHA2_256 and cid[3] == 0x20:
        if sha256(data).digest() == cid[4:]:
            return
        raise CorruptBlock(f"block {cid_to_str(cid)} does not match its hash")
    raise CorruptBlock(f"block {cid_to_str(cid)} does not use a sha2-256 CID; cannot verify it")


class CarStore:
    """Read-only blocks of one CAR, by binary CID. Not thread-safe; ``close()`` when done."""

    roots: tuple[bytes, ...]
    size: int
    duplicates: int
    """Frames whose CID an earlier frame already had (the first copy wins)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __contains__(self, cid: bytes) -> bool:
        raise NotImplementedError

    def get(self, cid: bytes) -> bytes:
        """The block's bytes, unchecked; raises ``TruncatedRepo`` when the CAR lacks it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying file, if any. Idempotent."""

    def __enter__(self) -> CarStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scan(
        self, buf: bytes, pos: int, base: int, limits: CarLimits, add: Callable[[bytes, int], Any]
    ) -> tuple[int, int]:
        """Pass every complete frame of ``buf`` from ``pos`` to ``add(cid, packed)``
        (``packed``: the block's ``offset << 32 | length``); return where the first
        incomplete frame starts (``len(buf)`` when none) and how many frames were passed.
        ``base`` is ``buf``'s file offset.
        """
        end = len(buf)
        max_block = limits.max_block_bytes
        frames = 0
        while pos < end:
            start = pos
            try:
                # Frame lengths of real blocks fit one or two varint bytes: decode inline.
                first = buf[pos]
                if first < 0x80:
                    length, pos = first, pos + 1
                elif 0 < buf[pos + 1] < 0x80:
                    length, pos = (first & 0x7F) | (buf[pos + 1] << 7), pos + 2
                else:
                    length, pos = read_varint(buf, pos)
            except IndexError:
                return start, frames
            except ValueError as exc:
                raise MalformedCar(f"bad frame length at byte {base + start}: {exc}") from None
            if length > max_block:
                raise MalformedCar(
                    f"frame at byte {base + start} declares {length} bytes, over the "
                    f"{max_block}-byte block cap"
                )
            frame_end = pos + length
            if frame_end > end:
                return start, frames
            if length >= _FAST_CID_LEN and buf.startswith(_FAST_CID_PREFIXES, pos):
                cid_end = pos + _FAST_CID_LEN
            else:
                cid_end = _cid_end(buf, pos, base + start)
            if cid_end > frame_end:
                raise MalformedCar(f"CID overruns its frame at byte {base + start}")
            add(buf[pos:cid_end], ((base + cid_end) << _OFFSET_SHIFT) | (frame_end - cid_end))
            frames += 1
            pos = frame_end
        return pos, frames


def _cid_end(buf: bytes, pos: int, at: int) -> int:
    try:
        return parse_cid_bytes(buf, pos)
    except (IndexError, ValueError) as exc:
        raise MalformedCar(f"bad CID in frame at byte {at}: {exc}") from None


def _parse_header(buf: bytes) -> tuple[tuple[bytes, ...], int]:
    """Decode the CAR header at the start of ``buf``; return ``(roots, end offset)``."""
    try:
        length, pos = read_varint(buf, 0)
    except IndexError:
        raise TruncatedRepo("the CAR ends inside its header") from None
    except ValueError as exc:
        raise MalformedCar(f"bad CAR header length: {exc}") from None
    if length == 0 or length > 64 * 1024:
        raise MalformedCar(f"implausible CAR header length {length}")
    if pos + length > len(buf):
        raise TruncatedRepo("the CAR ends inside its header")
    try:
        header = libipld.decode_dag_cbor(buf[pos : pos + length])
    except (ValueError, RecursionError, TypeError, OverflowError) as exc:
        raise MalformedCar(f"CAR header is not DAG-CBOR: {exc}") from None
    if not isinstance(header, dict) or header.get("version") != 1:
        version = header.get("version") if isinstance(header, dict) else None
        raise MalformedCar(f"not a CAR v1 header (version {version!r})")
    roots = header.get("roots")
    if not isinstance(roots, list) or not roots or not all(isinstance(r, bytes) for r in roots):
        raise MalformedCar("CAR header has no roots")
    return tuple(roots), pos + length


class MemoryCar(CarStore):
    """A CAR held in memory as one ``bytes`` object.

    Indexed by the C reader where it can (``native``): its block table (``table``, for
    the C walk) holds no Python object per block. Otherwise, or for a CAR outside the C
    reader's subset, the Python scan indexes it in a ``dict`` and names any fault.
    """

    def __init__(
        self, data: bytes, limits: CarLimits = CarLimits(), *, native: bool = True
    ) -> None:
        if len(data) > limits.max_total_bytes:
            raise RepoTooLarge(f"CAR of {len(data)} bytes is over the {limits.max_total_bytes} cap")
        self._data = data
        self.size = len(data)
        self.roots, pos = _parse_header(data)
        self.table: bytes | None = None
        """The C reader's block table (None: indexed in Python)."""
        self._find: Callable[[bytes], int | None]
        scanned = fastrepo.scan(data, pos, limits.max_block_bytes) if native and fastrepo else None
        if scanned is not None and fastrepo is not None:
            self.table, self._blocks, frames = scanned
            self._find = partial(fastrepo.find, data, self.table)
        else:
            index: dict[bytes, int] = {}
            stop, frames = self._scan(data, pos, 0, limits, index.setdefault)
            if stop != len(data):
                raise TruncatedRepo(f"the CAR ends inside a frame at byte {stop}")
            self._find, self._blocks = index.get, len(index)
        self.duplicates = frames - self._blocks

    @property
    def data(self) -> bytes:
        return self._data

    def __len__(self) -> int:
        return self._blocks

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, bytes) and self._find(cid) is not None

    def get(self, cid: bytes) -> bytes:
        packed = self._find(cid)
        if packed is None:
            raise _missing(cid)
        offset = packed >> _OFFSET_SHIFT
        return self._data[offset : offset + (packed & _LENGTH_MASK)]


class CompactIndex:
    """Where each block of a large CAR is, in ~20 bytes per block (a ``dict`` takes ~170).

    A CID in the usual form (36 bytes: CIDv1, sha2-256) is keyed by the first 8 bytes of
    its digest; keys and block locations live in two ``uint64`` arrays, sorted once the
    scan ends (by key, then offset: the first copy of a block first), with a table of
    where each bucket of leading key bits starts, so a lookup compares one or two keys.
    Equal keys — a repeated block, or two of a repo's digests sharing 64 bits (odds ~1e-6
    for 4 million blocks) — are told apart by the store, which checks the full CID written
    before each block. Other CIDs, which real repos never use, go to a ``dict``.
    """

    def __init__(self) -> None:
        self._keys = array("Q")
        self._values = array("Q")
        self._other: dict[bytes, int] = {}
        self._other_frames = 0
        self._starts: Sequence[int] = (0, 0)
        self._keys_view: Sequence[int] = ()
        self._values_view: Sequence[int] = ()
        self._shift = 63

    @property
    def frames(self) -> int:
        return len(self._keys) + self._other_frames

    @property
    def other_duplicates(self) -> int:
        """Repeated frames among the CIDs kept in the ``dict``."""
        return self._other_frames - len(self._other)

    def add(self, cid: bytes, packed: int) -> None:
        """Record a frame (before :meth:`freeze`)."""
        if len(cid) == _FAST_CID_LEN and cid.startswith(_FAST_CID_PREFIXES):
            self._keys.append(int.from_bytes(cid[4:12], "big"))
            self._values.append(packed)
        else:
            self._other_frames += 1
            self._other.setdefault(cid, packed)

    def freeze(self) -> Sequence[tuple[int, int]]:
        """Sort the keys for lookups; return the runs ``(start, stop)`` of equal keys,
        for the store to count true duplicates."""
        import numpy as np  # here only: most repos are read from memory, with a dict

        keys = np.frombuffer(self._keys, dtype=np.uint64)
        values = np.frombuffer(self._values, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")  # frames were added in file order
        sorted_keys, sorted_values = keys[order], values[order]
        del keys, values, order
        self._keys, self._values = array("Q"), array("Q")  # the unsorted copies, freed
        bits = max(1, min(22, len(sorted_keys).bit_length() - 2))  # ~2-4 keys per bucket
        self._shift = 64 - bits
        bounds = np.arange(1 << bits, dtype=np.uint64) << np.uint64(self._shift)
        starts = np.append(np.searchsorted(sorted_keys, bounds), len(sorted_keys))
        self._starts = _view(starts.astype(np.uint32), "I")
        self._keys_view = _view(sorted_keys, "Q")
        self._values_view = _view(sorted_values, "Q")
        runs: list[tuple[int, int]] = []  # maximal runs of equal keys: rare, so in Python
        for i in np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1]).tolist():
            if runs and runs[-1][1] == i + 1:
                runs[-1] = (runs[-1][0], i + 2)
            else:
                runs.append((i, i + 2))
        return runs

    def other(self, cid: bytes) -> int | None:
        """The packed location of a CID not in the usual form."""
        return self._other.get(cid)

    def span(self, key: int) -> tuple[Sequence[int], Sequence[int], int, int]:
        """``(keys, values, start, stop)``: the sorted keys and locations, and the slice
        of them where ``key`` may be (its bucket: a key or two)."""
        bucket = key >> self._shift
        return self._keys_view, self._values_view, self._starts[bucket], self._starts[bucket + 1]

    def value_at(self, i: int) -> int:
        return self._values_view[i]

    def __len__(self) -> int:
        return len(self._keys_view) + len(self._other)


def _view(values: Any, item: Literal["I", "Q"]) -> memoryview[int]:
    """A numpy array of unsigned ints as a sequence of Python ints (``item``: ``"I"`` or
    ``"Q"``); indexing it is ~3x faster than indexing the array, which makes a numpy
    scalar each time."""
    import numpy as np

    raw: memoryview[int] = np.ascontiguousarray(values).data.cast("B")
    return raw.cast(item)


class FileCar(CarStore):
    """A CAR file, indexed in one streaming pass (:class:`CompactIndex`) and then read
    block by block, each with its CID so the index's key is confirmed."""

    def __init__(self, path: str | os.PathLike[str], limits: CarLimits = CarLimits()) -> None:
        self._index = CompactIndex()
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(self._fd).st_size
            if self.size > limits.max_total_bytes:
                raise RepoTooLarge(
                    f"CAR file {path} of {self.size} bytes is over the {limits.max_total_bytes} cap"
                )
            self._index_file(limits)
        except BaseException:
            self.close()
            raise

    def _index_file(self, limits: CarLimits) -> None:
        chunk = max(limits.chunk_bytes, limits.max_block_bytes + 128)
        buf = os.pread(self._fd, chunk, 0)
        buf_base = 0  # file offset of buf[0]
        self.roots, pos = _parse_header(buf)
        while True:
            pos, _ = self._scan(buf, pos, buf_base, limits, self._index.add)
            more = os.pread(self._fd, chunk, buf_base + len(buf))
            if not more:
                break
            buf_base += pos
            buf = buf[pos:] + more
            pos = 0
        if pos != len(buf):
            raise TruncatedRepo(f"the CAR ends inside a frame at byte {buf_base + pos}")
        frames = self._index.frames
        self.duplicates = self._index.other_duplicates
        for start, stop in self._index.freeze():
            cids = {self._frame_cid(self._index.value_at(i)) for i in range(start, stop)}
            self.duplicates += stop - start - len(cids)
        self._unique = frames - self.duplicates

    def _frame_cid(self, packed: int) -> bytes:
        """The 36-byte CID written before a block located by the compact index's keys."""
        offset = packed >> _OFFSET_SHIFT
        return self._pread(_FAST_CID_LEN, offset - _FAST_CID_LEN)

    def __len__(self) -> int:
        return self._unique

    def __contains__(self, cid: bytes) -> bool:
        return self._find(cid) is not None

    def get(self, cid: bytes) -> bytes:
        data = self._find(cid)
        if data is None:
            raise _missing(cid)
        return data

    def _find(self, cid: bytes) -> bytes | None:
        if len(cid) != _FAST_CID_LEN or not cid.startswith(_FAST_CID_PREFIXES):
            packed = self._index.other(cid)
            return (
                None
                if packed is None
                else self._pread(packed & _LENGTH_MASK, packed >> _OFFSET_SHIFT)
            )
        key = int.from_bytes(cid[4:12], "big")
        keys, values, i, stop = self._index.span(key)
        while i < stop:  # inline, not a generator: this runs for every block read
            if keys[i] == key:
                packed = values[i]
                offset = (packed >> _OFFSET_SHIFT) - _FAST_CID_LEN
                frame = self._pread(_FAST_CID_LEN + (packed & _LENGTH_MASK), offset)
                if frame.startswith(cid):
                    return frame[_FAST_CID_LEN:]
            i += 1
        return None

    def _pread(self, length: int, offset: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise TruncatedRepo(f"the CAR file shrank while being read (byte {offset})")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _missing(cid: bytes) -> TruncatedRepo:
    return TruncatedRepo(f"the CAR lacks block {cid_to_str(cid)} that the repo needs")


def open_car(
    car: bytes | str | os.PathLike[str], limits: CarLimits = CarLimits(), *, native: bool = True
) -> CarStore:
    """A :class:`MemoryCar` for ``bytes``, a :class:`FileCar` for a path."""
    if isinstance(car, bytes | bytearray | memoryview):
        return MemoryCar(bytes(car), limits, native=native)
    if isinstance(car, str | Path) or hasattr(car, "__fspath__"):
        return FileCar(car, limits)
    raise TypeError(f"expected CAR bytes or a path, not {type(car).__name__}")
