"""Types of the C module built from ``_arrowcols.c``."""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

_Buffer = TypeVar("_Buffer")

def columns(rows: list[tuple[object, ...]], width: int, /) -> list[list[object]]: ...
def strings(
    values: list[str | None], allocate: Callable[[int], _Buffer], /
) -> tuple[_Buffer, _Buffer, _Buffer | None, int] | None: ...
def micros(values: Sequence[datetime | None], /) -> tuple[bytes, bytes | None, int] | None: ...
