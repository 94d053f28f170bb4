"""Types of the C module built from ``_arrowtime.c``."""

from collections.abc import Sequence
from datetime import datetime

def micros(values: Sequence[datetime | None], /) -> tuple[bytes, bytes | None, int] | None: ...
