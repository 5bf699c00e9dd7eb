"""Calls that wait for one model together go through it together, as one batch.

Four people who stop talking at the same moment each wait for a Whisper transcript; one after
the other on one model (2 cores, each beside the LLM's replies) the fourth got its words ~2 s
after its speech ended. Whisper (CTranslate2) decodes a batch of windows in one call: four
10 s windows with beam 5 took ~150 ms each as one batch against ~240 ms one by one
(in-process, 2-core Xeon VM), and all four are ready when the batch is.

A call joins the queue, then waits for its turn on the model's lock (by priority, as before)
or for its result, whichever comes first. The one let in takes every waiting call of the same
kind (up to ``max_batch``) and runs them as one batch; the others get their results without
taking the lock. If the caller that runs a batch is cancelled, the batch still finishes in its
thread and the others still get their results. A batch is told whether anyone still waits for
it (``run_batch``'s ``wanted``), so that one whose callers all gave up can skip its costly part.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from voice_agent.services.priority_lock import PriorityLoopLock

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(eq=False)
class _Call(Generic[In, Out]):
    item: In
    kind: Hashable
    priority: int
    taken: bool = False
    """In a batch (which may be running for a caller that gave up)."""
    withdrawn: bool = False
    """Its caller gave up (read by the batch's thread: see ``wanted``)."""
    result: asyncio.Future[Out] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class BatchQueue(Generic[In, Out]):
    def __init__(self, lock: PriorityLoopLock, executor: Executor,
                 run_batch: Callable[[Sequence[In], Hashable, Callable[[], bool]], list[Out]],
                 max_batch: int) -> None:
        """``run_batch(items, kind, wanted)`` runs in ``executor`` and returns one result per
        item, in order; calls batch together only with calls of the same ``kind`` (e.g. beam
        size). ``wanted()`` is False once every caller of the batch has given up: their
        results are never read."""
        self._lock = lock
        self._executor = executor
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._waiting: list[_Call[In, Out]] = []
        self.batches: list[int] = []
        """The size of each batch run so far (the last 100), for tests and logs."""

    async def call(self, item: In, kind: Hashable, priority: int) -> Out:
        call: _Call[In, Out] = _Call(item, kind, priority)
        self._waiting.append(call)
        try:
            if await self._turn_or_result(call, priority):
                try:
                    if not call.taken:
                        await self._run(self._take(call))
                finally:
                    self._lock.release()
            return await call.result
        except asyncio.CancelledError:
            call.withdrawn = True
            raise
        finally:
            if call in self._waiting:
                self._waiting.remove(call)

    def _take(self, first: _Call[In, Out]) -> list[_Call[In, Out]]:
        """``first`` and the calls of its kind waiting longest among the most urgent."""
        loop = first.result.get_loop()
        # A call of an event loop that has gone (a service outlives loops in tests and the
        # CLI) is nobody's to answer.
        self._waiting = [c for c in self._waiting if c.result.get_loop() is loop]
        others = sorted((c for c in self._waiting if c is not first and c.kind == first.kind),
                        key=lambda c: c.priority)  # stable: arrival order within a priority
        batch = [first, *others[: max(0, self.max_batch - 1)]]
        for c in batch:
            c.taken = True
            if c in self._waiting:
                self._waiting.remove(c)
        return batch

    async def _run(self, batch: list[_Call[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._executor, functools.partial(
            self._run_batch, [c.item for c in batch], batch[0].kind,
            lambda: not all(c.withdrawn for c in batch)))
        self.batches = [*self.batches[-99:], len(batch)]
        work.add_done_callback(functools.partial(_deliver, batch))
        await asyncio.shield(work)  # cancelled here, the batch still reaches the others

    async def _turn_or_result(self, call: _Call[In, Out], priority: int) -> bool:
        """Wait for the lock or for the call's result (another caller's batch held it); True
        when this caller holds the lock and must release it."""
        turn = asyncio.ensure_future(self._lock.acquire(priority))
        try:
            await asyncio.wait({turn, call.result}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._give_up(turn)
            raise
        if turn.done() and not call.result.done():
            turn.result()  # the lock's own error, if any
            return True
        await self._give_up(turn)
        return False

    async def _give_up(self, turn: asyncio.Future[None]) -> None:
        """Leave the lock's queue; a turn already given is handed on."""
        if not turn.done():
            turn.cancel()
        try:
            await turn
        except asyncio.CancelledError:
            return  # left the queue (or was let in and handed the lock on)
        self._lock.release()


def _deliver(batch: list[_Call[In, Out]], work: asyncio.Future[list[Out]]) -> None:
    for n, call in enumerate(batch):
        if call.result.done():
            continue
        if work.cancelled():
            call.result.cancel()
        elif (error := work.exception()) is not None:
            call.result.set_exception(error)
            call.result.add_done_callback(_retrieved)
        else:
            call.result.set_result(work.result()[n])


def _retrieved(future: asyncio.Future[object]) -> None:
    """A caller that gave up never reads its error: mark it read (no 'never retrieved')."""
    if not future.cancelled():
        future.exception()
