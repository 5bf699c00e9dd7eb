"""Bounded cancellation: a stage that ignores its cancel is abandoned, with where it waits."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from voice_agent.core.tasks import stop_within, task_stack, within


async def _stubborn(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            pass  # a provider that swallows its cancellation


async def _waits_in_a_child(q: asyncio.Queue[int]) -> None:
    child = asyncio.create_task(q.get(), name="inner-get")
    await asyncio.gather(child)


async def test_a_task_that_stops_is_stopped_at_once() -> None:
    task = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    t0 = time.monotonic()
    assert await stop_within(task, "sleeper") is True
    assert task.cancelled() and time.monotonic() - t0 < 0.1


async def test_a_task_that_ignores_its_cancel_is_abandoned_after_the_deadline(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="voice_agent.core.tasks")
    release = asyncio.Event()
    task = asyncio.create_task(_stubborn(release), name="stubborn")
    await asyncio.sleep(0)
    t0 = time.monotonic()
    assert await stop_within(task, "the stubborn stage", deadline_s=0.2) is False
    assert 0.2 <= time.monotonic() - t0 < 0.5
    assert not task.done()
    assert "the stubborn stage did not stop" in caplog.text and "_stubborn" in caplog.text
    release.set()
    await task


async def test_the_stack_follows_the_awaits_into_child_tasks() -> None:
    q: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(_waits_in_a_child(q), name="outer")
    await asyncio.sleep(0.01)
    stack = task_stack(task)
    assert "_waits_in_a_child" in stack and "awaiting task inner-get" in stack
    assert "queues.py" in stack and "in get" in stack  # where it really waits
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_within_times_out_and_keeps_a_cancel() -> None:
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(1), 0.05)
    event = asyncio.Event()
    waiter = asyncio.create_task(within(event.wait(), 1))
    await asyncio.sleep(0)
    event.set()
    waiter.cancel()  # in the same loop turn as the event: wait_for would lose this cancel
    with pytest.raises(asyncio.CancelledError):
        await waiter
