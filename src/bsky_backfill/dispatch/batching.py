"""Batches of records an integration has not acknowledged yet, at most N per run.

Selected records arrive in chunks; each chunk's (uri, cid) keys are looked up in the
bookkeeping in one query, acknowledged ones are counted as skipped, and the rest are cut
into batches of ``size``. ``limit`` caps the records batched in one run (records past
it are left for the next run). The reading of the dataset runs in a thread, so the event
loop keeps serving other integrations' sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence

from bsky_backfill.dispatch.selection import SelectedRecord

__all__ = ["Acknowledged", "unsent_batches"]

Acknowledged = Callable[[Sequence[tuple[str, str]]], Awaitable[set[tuple[str, str]]]]
"""Which of the given (uri, cid) keys the integration acknowledged already."""


async def unsent_batches(
    chunks: Iterator[list[SelectedRecord]],
    acknowledged: Acknowledged,
    *,
    size: int,
    limit: int | None = None,
    on_skipped: Callable[[int], None] | None = None,
) -> AsyncIterator[tuple[SelectedRecord, ...]]:
    """Batches of ``size`` (the last may be smaller) of the records in ``chunks`` that
    ``acknowledged`` does not know, in order, at most ``limit`` records in all.

    ``on_skipped(n)`` is told of each chunk's acknowledged records. Closes ``chunks``
    when done or abandoned.
    """
    if size < 1 or (limit is not None and limit < 1):
        raise ValueError("size and limit must be at least 1")
    pending: list[SelectedRecord] = []
    remaining = limit
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            done = await acknowledged([record.key for record in chunk]) if chunk else set()
            fresh = [record for record in chunk if record.key not in done]
            if on_skipped is not None and len(chunk) > len(fresh):
                on_skipped(len(chunk) - len(fresh))
            pending.extend(fresh)
            if remaining is not None:
                del pending[remaining:]
            while pending and (len(pending) >= size or len(pending) == remaining):
                batch, pending = tuple(pending[:size]), pending[size:]
                if remaining is not None:
                    remaining -= len(batch)
                yield batch
            if remaining == 0:
                return
        if pending:
            yield tuple(pending)
    finally:
        if isinstance(chunks, Generator):
            chunks.close()
