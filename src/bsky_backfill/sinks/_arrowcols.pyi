"""Types of the C module built from ``_arrowcols.c``."""

from collections.abc import Sequence
from datetime import datetime

def columns(rows: list[tuple[object, ...]], width: int, /) -> list[list[object]]: ...
def micros(values: Sequence[datetime | None], /) -> tuple[bytes, bytes | None, int] | None: ...
