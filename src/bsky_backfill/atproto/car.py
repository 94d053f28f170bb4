"""CAR v1 files: framing, a block index, and hash checks.

A CAR is a varint-prefixed DAG-CBOR header ``{version: 1, roots: [CID]}`` followed by
varint-prefixed ``CID + block`` frames. Blocks come in any order, may repeat (the first
copy wins) and may be unreferenced; nothing is decoded here. Blocks are looked up by their
binary CID and hash-checked on use, so a filtered read never touches the rest.

Two stores share one scanner: :class:`MemoryCar` over ``bytes`` and :class:`FileCar`,
which reads a file in chunks to build an offset index and then fetches blocks with
``pread`` — the file is never held in memory whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Final

import libipld

from bsky_backfill.atproto.cid import SHA2_256, cid_to_str, parse_cid_bytes, read_varint
from bsky_backfill.errors import CorruptBlock, MalformedCar, RepoTooLarge, TruncatedRepo

__all__ = ["CarLimits", "CarStore", "FileCar", "MemoryCar", "check_block", "open_car"]

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

    def __init__(self) -> None:
        self._index: dict[bytes, int] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, cid: bytes) -> bool:
        return cid in self._index

    def get(self, cid: bytes) -> bytes:
        """The block's bytes, unchecked; raises ``TruncatedRepo`` when the CAR lacks it."""
        packed = self._index.get(cid)
        if packed is None:
            raise TruncatedRepo(f"the CAR lacks block {cid_to_str(cid)} that the repo needs")
        return self._read(packed >> _OFFSET_SHIFT, packed & _LENGTH_MASK)

    def _read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying file, if any. Idempotent."""

    def __enter__(self) -> CarStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scan(self, buf: bytes, pos: int, base: int, limits: CarLimits) -> int:
        """Index every complete frame of ``buf`` from ``pos``; return where the first
        incomplete frame starts (``len(buf)`` when none). ``base`` is ``buf``'s file offset.
        """
        index = self._index
        end = len(buf)
        max_block = limits.max_block_bytes
        before = len(index)
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
                return start
            except ValueError as exc:
                raise MalformedCar(f"bad frame length at byte {base + start}: {exc}") from None
            if length > max_block:
                raise MalformedCar(
                    f"frame at byte {base + start} declares {length} bytes, over the "
                    f"{max_block}-byte block cap"
                )
            frame_end = pos + length
            if frame_end > end:
                return start
            if length >= _FAST_CID_LEN and buf.startswith(_FAST_CID_PREFIXES, pos):
                cid_end = pos + _FAST_CID_LEN
            else:
                cid_end = _cid_end(buf, pos, base + start)
            if cid_end > frame_end:
                raise MalformedCar(f"CID overruns its frame at byte {base + start}")
            index.setdefault(
                buf[pos:cid_end], ((base + cid_end) << _OFFSET_SHIFT) | (frame_end - cid_end)
            )
            frames += 1
            pos = frame_end
        self.duplicates += frames - (len(index) - before)
        return pos


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
    """A CAR held in memory as one ``bytes`` object."""

    def __init__(self, data: bytes, limits: CarLimits = CarLimits()) -> None:
        super().__init__()
        if len(data) > limits.max_total_bytes:
            raise RepoTooLarge(f"CAR of {len(data)} bytes is over the {limits.max_total_bytes} cap")
        self._data = data
        self.size = len(data)
        self.roots, pos = _parse_header(data)
        stop = self._scan(data, pos, 0, limits)
        if stop != len(data):
            raise TruncatedRepo(f"the CAR ends inside a frame at byte {stop}")

    def get(self, cid: bytes) -> bytes:
        packed = self._index.get(cid)
        if packed is None:
            return super().get(cid)  # raises TruncatedRepo
        offset = packed >> _OFFSET_SHIFT
        return self._data[offset : offset + (packed & _LENGTH_MASK)]

    def _read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]


class FileCar(CarStore):
    """A CAR file, indexed in one streaming pass and then read block by block."""

    def __init__(self, path: str | os.PathLike[str], limits: CarLimits = CarLimits()) -> None:
        super().__init__()
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
            pos = self._scan(buf, pos, buf_base, limits)
            more = os.pread(self._fd, chunk, buf_base + len(buf))
            if not more:
                break
            buf_base += pos
            buf = buf[pos:] + more
            pos = 0
        if pos != len(buf):
            raise TruncatedRepo(f"the CAR ends inside a frame at byte {buf_base + pos}")

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise TruncatedRepo(f"the CAR file shrank while being read (byte {offset})")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_car(car: bytes | str | os.PathLike[str], limits: CarLimits = CarLimits()) -> CarStore:
    """A :class:`MemoryCar` for ``bytes``, a :class:`FileCar` for a path."""
    if isinstance(car, bytes | bytearray | memoryview):
        return MemoryCar(bytes(car), limits)
    if isinstance(car, str | Path) or hasattr(car, "__fspath__"):
        return FileCar(car, limits)
    raise TypeError(f"expected CAR bytes or a path, not {type(car).__name__}")
