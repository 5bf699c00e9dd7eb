"""Calls waiting for one model at the same time run through it as one batch (services/batch_queue.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from voice_agent.services.batch_queue import BatchQueue
from voice_agent.services.priority_lock import LATER, URGENT, PriorityLoopLock


class Model:
    """Upper-cases its items; each batch waits for ``gate`` (a model busy for as long as the
    test wants), then records what it ran."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.runs: list[tuple[list[str], Hashable]] = []
        self.wanted: list[bool] = []
        """Whether anyone still waited for each batch when it came to its costly part."""
        self.fail = False

    def __call__(self, items: Sequence[str], kind: Hashable,
                 wanted: Callable[[], bool] = lambda: True) -> list[str]:
        self.gate.wait(5)
        self.runs.append((list(items), kind))
        self.wanted.append(wanted())
        if self.fail:
            raise RuntimeError("decode failed")
        return [f"{item.upper()}/{kind}" for item in items]


@pytest.fixture
def setup():
    model, lock = Model(), PriorityLoopLock()
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield model, lock, BatchQueue(lock, pool, model, max_batch=3)


async def _busy_then(model: Model, queue: BatchQueue, *calls) -> list[object]:
    """One call holds the model while ``calls`` (item, kind, priority) queue behind it."""
    model.gate.clear()
    first = asyncio.create_task(queue.call("first", 5, URGENT))
    await asyncio.sleep(0.02)
    tasks = [asyncio.create_task(queue.call(*c)) for c in calls]
    await asyncio.sleep(0.02)
    model.gate.set()
    return await asyncio.gather(first, *tasks, return_exceptions=True)


async def test_calls_that_wait_together_run_as_one_batch(setup) -> None:
    model, lock, queue = setup
    results = await _busy_then(model, queue, ("a", 5, URGENT), ("b", 5, LATER), ("c", 5, URGENT))
    assert results == ["FIRST/5", "A/5", "B/5", "C/5"]
    assert [items for items, _ in model.runs] == [["first"], ["a", "c", "b"]]  # urgent first
    assert queue.batches == [1, 3]
    assert not lock.locked and lock.waiting == 0  # the batched calls never took the lock


async def test_only_calls_of_the_same_kind_share_a_batch_and_batches_are_bounded(setup) -> None:
    model, lock, queue = setup
    results = await _busy_then(model, queue, *[(x, 5, URGENT) for x in "abcd"], ("e", 1, URGENT))
    assert results == ["FIRST/5", "A/5", "B/5", "C/5", "D/5", "E/1"]
    assert [items for items, _ in model.runs] == [["first"], ["a", "b", "c"], ["d"], ["e"]]
    assert not lock.locked


async def test_a_caller_that_gives_up_leaves_the_others_their_results(setup) -> None:
    model, lock, queue = setup
    model.gate.clear()
    owner = asyncio.create_task(queue.call("a", 5, URGENT))
    other = asyncio.create_task(queue.call("b", 5, URGENT))
    await asyncio.sleep(0.02)  # both in one batch, the model busy with it
    owner.cancel()
    await asyncio.sleep(0.02)
    assert not lock.locked  # the lock was handed back at once
    model.gate.set()
    assert await other == "B/5"
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert model.runs == [(["a", "b"], 5)]


async def test_a_failed_batch_fails_every_call_in_it(setup) -> None:
    model, lock, queue = setup
    model.fail = True
    results = await _busy_then(model, queue, ("a", 5, URGENT), ("b", 5, URGENT))
    assert all(isinstance(r, RuntimeError) for r in results), results
    assert not lock.locked
    model.fail = False
    assert await queue.call("c", 5, URGENT) == "C/5"  # and the queue goes on


async def test_a_waiting_caller_cancelled_before_its_batch_leaves_no_trace(setup) -> None:
    model, lock, queue = setup
    model.gate.clear()
    first = asyncio.create_task(queue.call("first", 5, URGENT))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(queue.call("gone", 5, URGENT))
    kept = asyncio.create_task(queue.call("kept", 5, URGENT))
    await asyncio.sleep(0.02)
    gone.cancel()
    model.gate.set()
    assert await first == "FIRST/5" and await kept == "KEPT/5"
    assert model.runs == [(["first"], 5), (["kept"], 5)]
    assert not lock.locked and lock.waiting == 0


async def test_a_batch_whose_callers_all_gave_up_is_told_so_before_its_costly_part(setup) -> None:
    """A pause inside a question, and the user went on: Whisper may skip the decoder (the
    larger part of a pass) once nobody waits for the words; a batch someone still waits for
    is not told so."""
    model, lock, queue = setup
    model.gate.clear()
    alone = asyncio.create_task(queue.call("alone", 5, URGENT))
    await asyncio.sleep(0.02)  # with the model
    alone.cancel()
    await asyncio.sleep(0.02)
    model.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await alone
    model.gate.clear()
    left = asyncio.create_task(queue.call("left", 5, URGENT))
    kept = asyncio.create_task(queue.call("kept", 5, URGENT))
    await asyncio.sleep(0.02)  # one batch of two
    left.cancel()
    await asyncio.sleep(0.02)
    model.gate.set()
    assert await kept == "KEPT/5"
    assert model.runs == [(["alone"], 5), (["left", "kept"], 5)]
    assert model.wanted == [False, True]
    assert not lock.locked and lock.waiting == 0


def test_a_call_left_behind_by_a_closed_event_loop_is_not_run_in_the_next() -> None:
    """A service outlives event loops (tests, the CLI); a loop closed with a call still
    waiting never ran its clean-up, and that call must not ride in the next loop's batch."""
    model, lock = Model(), PriorityLoopLock()
    with ThreadPoolExecutor(max_workers=1) as pool:
        queue: BatchQueue[str, str] = BatchQueue(lock, pool, model, max_batch=4)
        old = asyncio.new_event_loop()
        model.gate.clear()
        old.create_task(queue.call("busy", 5, URGENT))
        old.create_task(queue.call("left", 1, URGENT))  # another kind: not in busy's batch
        old.run_until_complete(asyncio.sleep(0.02))
        old.close()  # closed under its waiting calls: no finally of theirs ran
        model.gate.set()

        async def later() -> str:
            return await queue.call("next", 1, URGENT)

        assert asyncio.run(later()) == "NEXT/1"
        assert model.runs[-1] == (["next"], 1)
