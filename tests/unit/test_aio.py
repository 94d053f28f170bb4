"""finish_before_cancel: work once started ends before a cancellation reaches its caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bsky_backfill.aio import (
    finish_before_cancel,
    finishes_before_cancel,
    first_error,
    keeping_cancellation,
    one_error,
    thread_to_the_end,
)


async def test_a_cancelled_caller_waits_for_the_work_then_is_cancelled() -> None:
    steps: list[str] = []

    async def work() -> None:
        steps.append("began")
        await asyncio.sleep(0.05)
        steps.append("ended")

    caller = asyncio.create_task(finish_before_cancel(work()))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert steps == ["began", "ended"]


async def test_repeated_cancels_still_wait_for_the_work() -> None:
    ended = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.05)
        ended.set()

    caller = asyncio.create_task(finish_before_cancel(work()))
    for _ in range(3):
        await asyncio.sleep(0.005)
        caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ended.is_set()


async def test_without_a_cancel_the_result_and_errors_come_through() -> None:
    async def answer() -> int:
        return 42

    async def broken() -> None:
        raise ValueError("bad")

    assert await finish_before_cancel(answer()) == 42
    with pytest.raises(ValueError, match="bad"):
        await finish_before_cancel(broken())


async def test_a_cancelled_caller_sees_the_cancel_not_the_works_error() -> None:
    async def fails_late() -> None:
        await asyncio.sleep(0.03)
        raise ValueError("late")

    caller = asyncio.create_task(finish_before_cancel(fails_late()))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_the_decorator_and_the_thread_form_defer_the_cancel_too() -> None:
    release = threading.Event()
    finished: list[str] = []

    def blocking() -> None:
        release.wait(5)
        finished.append("thread")

    @finishes_before_cancel
    async def method(tag: str) -> str:
        await asyncio.sleep(0.03)
        finished.append(tag)
        return tag

    assert await method("plain") == "plain"
    decorated = asyncio.create_task(method("cancelled"))
    threaded = asyncio.create_task(thread_to_the_end(blocking))
    await asyncio.sleep(0.01)
    decorated.cancel()
    threaded.cancel()
    asyncio.get_running_loop().call_later(0.05, release.set)
    results = await asyncio.gather(decorated, threaded, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert finished == ["plain", "cancelled", "thread"]


def test_first_error_skips_the_cancelled_siblings_and_nested_groups() -> None:
    cause = OSError("disk full")
    group = BaseExceptionGroup(
        "tasks",
        [asyncio.CancelledError(), ExceptionGroup("inner", [cause, ValueError("later")])],
    )
    assert first_error(group) is cause


async def test_a_task_group_failure_leaves_as_the_error_that_caused_it() -> None:
    async def fails() -> None:
        raise OSError("disk full")

    async def waits() -> None:
        await asyncio.sleep(10)

    async def both() -> None:
        with one_error():
            async with asyncio.TaskGroup() as group:
                group.create_task(waits())
                group.create_task(fails())

    with pytest.raises(OSError, match="disk full") as raised:
        await both()
    assert isinstance(raised.value.__cause__, BaseExceptionGroup)


async def test_a_cancellation_the_awaited_work_swallowed_still_stops_the_task() -> None:
    async def swallows() -> str:  # as redis-py's client may, mid-command
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "an answer"
        return "never"

    reached_after = False

    async def caller() -> None:
        nonlocal reached_after
        await keeping_cancellation(swallows())
        reached_after = True

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not reached_after


async def test_work_that_is_not_cancelled_answers_as_usual() -> None:
    async def answers() -> int:
        return 42

    assert await keeping_cancellation(answers()) == 42
