"""Types of the C module built from ``_fastrepo.c`` (see its header comment)."""

from typing import TypeVar

_Row = TypeVar("_Row", bound=tuple[object, ...])

def scan(data: bytes, pos: int, max_block: int, /) -> tuple[bytes, int, int] | None: ...
def find(data: bytes, table: bytes, cid: bytes, /) -> int | None: ...
def walk(
    data: bytes,
    table: bytes,
    root: bytes,
    check_hashes: bool,
    check_layers: bool,
    ranges: list[tuple[bytes, bytes]] | None,
    /,
) -> bytes | None: ...
def rows(
    cls: type[_Row],
    data: bytes,
    table: bytes,
    did: str,
    records: bytes,
    pos: int,
    count: int,
    check_hashes: bool,
    /,
) -> tuple[list[_Row], int]: ...
def row(cls: type[_Row], /, *values: object) -> _Row: ...
