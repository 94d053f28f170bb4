"""A huge repo's rows kept on disk in chunks, so memory does not grow with the repo.

A repo of millions of kept records would otherwise be held whole as rows (~1 KB each)
between its read and its batch's write. The worker writes its rows here in chunks of
``SPILL_ROWS`` once a repo has that many; sinks read them back a chunk at a time.

The file is a private temporary file (``mkstemp``: mode 0600, a fresh name) that is only
ever read back through the descriptor that created it, never reopened by name, so
nothing else can swap its content; it is deleted when the rows are closed or dropped.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from bsky_backfill.core.models import RecordRow

__all__ = ["SPILL_ROWS", "SpilledRows"]

SPILL_ROWS: Final = 20_000
"""Rows per chunk: ~20 MB of rows in memory at a time (a chunk of 50k took a 1 GB repo's
job over its 500 MB target), and still large Parquet row groups."""


class SpilledRows:
    """A repo's rows in a temporary file, in chunks; iterate (again and again) to read them.

    Not thread-safe: one reader at a time (sinks serialise their calls). ``close()`` when
    done; a dropped instance deletes its file too.
    """

    def __init__(self, directory: Path | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="rows-", suffix=".spill", dir=directory)
        self._file: BinaryIO = os.fdopen(fd, "w+b")
        self.path = Path(name)
        self._rows = 0
        self._close = weakref.finalize(self, _delete, self._file, self.path)

    def append(self, rows: Sequence[RecordRow]) -> None:
        """Write one chunk at the end of the file."""
        self._file.seek(0, os.SEEK_END)
        pickle.dump(list(rows), self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._rows += len(rows)

    def __len__(self) -> int:
        return self._rows

    def chunks(self) -> Iterator[list[RecordRow]]:
        """The chunks in the order they were appended."""
        self._file.flush()
        position, end = 0, self._file.seek(0, os.SEEK_END)
        while position < end:
            self._file.seek(position)
            chunk: list[RecordRow] = pickle.load(self._file)  # our own file: see the module doc
            position = self._file.tell()
            yield chunk

    def __iter__(self) -> Iterator[RecordRow]:
        for chunk in self.chunks():
            yield from chunk

    def close(self) -> None:
        """Delete the file. Idempotent."""
        self._close()


def _delete(file: BinaryIO, path: Path) -> None:
    file.close()
    path.unlink(missing_ok=True)
