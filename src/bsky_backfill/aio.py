"""asyncio helpers shared by the engine, the state store and the sinks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

__all__ = [
    "finish_before_cancel",
    "finishes_before_cancel",
    "first_error",
    "keeping_cancellation",
    "one_error",
    "thread_to_the_end",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def finish_before_cancel(work: Awaitable[_T]) -> _T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile, then let the
    cancellation through.

    For steps that must not stop halfway: a database transaction cancelled mid-statement
    leaves its connection holding the write lock until it is closed, and a call handed to
    a thread goes on after its awaiter is gone, racing whatever runs next. Deferring the
    cancellation by one step's duration keeps "cancelled" meaning "nothing in flight".
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the work itself was cancelled, or ended as we were
                break
            cancelled = True
            continue
        except BaseException:
            if not cancelled:
                raise
            break
        if not cancelled:
            return result
        break
    if not task.cancelled():
        task.exception()  # retrieved: the cancellation is what the caller sees
    raise asyncio.CancelledError


def finishes_before_cancel(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Decorate a coroutine function so that each call runs as :func:`finish_before_cancel`."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await finish_before_cancel(method(*args, **kwargs))

    return wrapper


async def thread_to_the_end(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread(func, ...)`` that a cancellation reaches only once the thread's
    call has ended (a thread cannot be stopped)."""
    return await finish_before_cancel(asyncio.to_thread(func, *args, **kwargs))


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of ``group`` that is not a cancellation (tasks cancelled because a
    sibling failed), else its first leaf."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = error.exceptions
        else:
            leaves.append(error)
    return next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])


@contextlib.contextmanager
def one_error() -> Iterator[None]:
    """Re-raise a task group's failure as the error that caused it (the others are the
    same fault seen from sibling tasks): callers and users see ``StoreUnavailable: ...``,
    not "unhandled errors in a TaskGroup"."""
    try:
        yield
    except BaseExceptionGroup as group:
        raise first_error(group) from group


async def keeping_cancellation(work: Awaitable[_T]) -> _T:
    """``await work``; if this task was cancelled meanwhile and ``work`` swallowed it
    (answered, or failed some other way), raise ``CancelledError`` all the same.

    redis-py's asyncio client (8.x) does swallow a cancellation that lands while a
    command is in flight (about one in four at random instants): a loop polling Redis
    then never stops, and whoever waits for it waits for ever.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        answer = await work
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError from exc
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return answer
