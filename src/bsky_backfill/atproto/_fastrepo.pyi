"""Types of the C module built from ``_fastrepo.c`` (see its header comment)."""

from typing import TypeVar

_Row = TypeVar("_Row", bound=tuple[object, ...])

def scan(data: bytes, pos: int, max_block: int, /) -> tuple[dict[bytes, int], int] | None: ...
def walk(
    data: bytes,
    index: dict[bytes, int],
    root: bytes,
    check_hashes: bool,
    check_layers: bool,
    ranges: list[tuple[bytes, bytes]] | None,
    /,
) -> list[tuple[bytes, bytes]] | None: ...
def rows(
    cls: type[_Row],
    data: bytes,
    index: dict[bytes, int],
    did: str,
    pairs: list[tuple[bytes, bytes]],
    start: int,
    stop: int,
    check_hashes: bool,
    /,
) -> list[_Row]: ...
