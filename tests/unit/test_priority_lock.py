"""The shared models' queue (services/priority_lock.py): urgent calls first, never a lost lock."""

from __future__ import annotations

import asyncio

from voice_agent.services.priority_lock import (LATER, NORMAL, URGENT, PriorityLoopLock,
                                                urgency, urgent_as)


async def _run(lock: PriorityLoopLock, name: str, order: list[str], priority: int | None,
               hold: asyncio.Event | None = None) -> None:
    async with lock.hold(priority):
        order.append(name)
        if hold is not None:
            await hold.wait()


async def _queue(lock: PriorityLoopLock, waiters: list[tuple[str, int | None]],
                 order: list[str]) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    """The lock held by 'first'; then ``waiters`` queue up in the order given."""
    hold = asyncio.Event()
    tasks = [asyncio.create_task(_run(lock, "first", order, NORMAL, hold))]
    await asyncio.sleep(0)
    for name, priority in waiters:
        tasks.append(asyncio.create_task(_run(lock, name, order, priority)))
        await asyncio.sleep(0)
    return hold, tasks


async def test_urgent_waiters_go_first_then_in_arrival_order() -> None:
    lock, order = PriorityLoopLock(), []
    hold, tasks = await _queue(lock, [("interim-a", LATER), ("piece-2", NORMAL),
                                      ("final", URGENT), ("interim-b", LATER),
                                      ("first-piece", URGENT)], order)
    assert lock.locked and lock.waiting == 5
    hold.set()
    await asyncio.gather(*tasks)
    assert order == ["first", "final", "first-piece", "piece-2", "interim-a", "interim-b"]
    assert not lock.locked


async def test_a_cancelled_waiter_leaves_the_queue_and_the_lock_goes_on() -> None:
    lock, order = PriorityLoopLock(), []
    hold, tasks = await _queue(lock, [("a", URGENT), ("b", NORMAL)], order)
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert lock.waiting == 1
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["first", "b"] and not lock.locked


async def test_a_waiter_cancelled_as_it_is_let_in_hands_the_lock_on() -> None:
    lock, order = PriorityLoopLock(), []
    hold, tasks = await _queue(lock, [("a", URGENT), ("b", NORMAL)], order)
    hold.set()
    await asyncio.sleep(0)  # 'first' released: 'a' is let in but has not run yet
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["first", "b"] and not lock.locked


async def test_the_tasks_urgency_is_the_default_priority() -> None:
    lock, order = PriorityLoopLock(), []
    hold, tasks = await _queue(lock, [("later", LATER)], order)

    async def urgent_caller() -> None:
        with urgent_as(URGENT):
            await _run(lock, "urgent", order, None)

    tasks.append(asyncio.create_task(urgent_caller()))
    await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(*tasks)
    assert order == ["first", "urgent", "later"]
    assert urgency.get() == NORMAL  # the block's level does not leak out of it


def test_a_lock_outlives_its_event_loop() -> None:
    lock = PriorityLoopLock()

    async def use() -> None:
        async with lock.hold():
            pass

    for _ in range(2):
        asyncio.run(use())
    assert not lock.locked


def test_a_holder_let_go_after_its_loop_closed_hands_the_lock_to_nobody_there() -> None:
    """A loop closed under a holder and a waiter: when the garbage collector closes the
    holder's coroutine, its release must not wake the waiter of the dead loop (that raised
    'Event loop is closed' inside the finaliser, seen in tests/unit/test_batch_queue.py)."""
    lock = PriorityLoopLock()
    old = asyncio.new_event_loop()
    holder = old.create_task(_run(lock, "holder", [], URGENT, asyncio.Event()))
    waiter = old.create_task(_run(lock, "waiter", [], URGENT))
    old.run_until_complete(asyncio.sleep(0.01))
    assert lock.locked and lock.waiting == 1
    old.close()
    holder.get_coro().close()  # what the finaliser does: its `finally` releases the lock
    assert not lock.locked
    waiter.get_coro().close()


async def test_a_reply_start_holds_the_cores_until_released_or_its_limit() -> None:
    from voice_agent.services.priority_lock import CORES, CoreTurn

    turn = CoreTurn(limit_s=0.1)
    await turn.take()
    assert CORES.locked
    turn.release()
    turn.release()  # idempotent: the first token, then the stream's end
    assert not CORES.locked
    hung = CoreTurn(limit_s=0.05)
    await hung.take()  # a model that never gives its first token ...
    await asyncio.sleep(0.15)
    assert not CORES.locked  # ... keeps the cores no longer than its limit
    hung.release()
    assert not CORES.locked
