"""Who goes first on a shared model: the call a user is waiting for, before one that can wait.

Whisper and Piper each serve every session, one call at a time. In arrival order, four people
talking at once made a final transcript (a turn is waiting for it) queue behind other sessions'
interims (shown, never needed), and a reply's first sentence (silence until it comes) behind
another reply's fifth (which has seconds of audio queued before it). Issue #15 item 2.

:class:`PriorityLoopLock` lets waiters in by priority, first come first served within one;
:data:`urgency` is the priority of the calls made from the current task (contextvars flow into
the async generators and coroutines the task awaits), so the caller says how urgent its work
is without every provider's signature changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
from collections.abc import AsyncIterator, Iterator

URGENT = 0
"""A user waits for this now: a final transcript, a reply's first audio."""
NORMAL = 1
LATER = 2
"""Nobody waits for it: an interim transcript, audio queued well ahead of its playback."""

urgency: contextvars.ContextVar[int] = contextvars.ContextVar("urgency", default=NORMAL)


@contextlib.contextmanager
def urgent_as(level: int) -> Iterator[None]:
    """Calls made inside this block (in this task) wait as ``level``."""
    token = urgency.set(level)
    try:
        yield
    finally:
        urgency.reset(token)


class PriorityLoopLock:
    """An asyncio lock whose waiters go in by priority (lower first), then in arrival order.

    Made for whichever event loop uses it, like :class:`~voice_agent.services.base.LoopLock`
    (a service outlives loops in tests and the CLI). Cancelling a waiter removes it; a waiter
    cancelled just after it was let in hands the lock on, so the lock is never lost.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def locked(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(1 for _p, _n, f in self._waiters if not f.done())

    @contextlib.asynccontextmanager
    async def hold(self, priority: int | None = None) -> AsyncIterator[None]:
        """Wait for the lock at ``priority`` (default: the task's :data:`urgency`), hold it
        for the block."""
        await self.acquire(urgency.get() if priority is None else priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: int) -> None:
        """Wait for the lock; the caller must :meth:`release` it (prefer :meth:`hold`)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop: nothing of the old one can still hold it
            self._loop, self._held, self._waiters = loop, False, []
        if not self._held and not self.waiting:
            self._held = True
            return
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # let in, then cancelled: the next one goes
            raise

    def release(self) -> None:
        while self._waiters:
            _p, _n, future = heapq.heappop(self._waiters)
            # A waiter of a loop closed under it can never run: a holder of that loop, let go
            # when the garbage collector closes its coroutine, must not hand it the lock.
            if not future.done() and not future.get_loop().is_closed():
                future.set_result(None)  # the lock passes on, held all along
                return
        self._held = False


CORES = PriorityLoopLock()
"""The process's bursts of model work take turns here: Whisper's transcriptions, and (with
server.take_turns_on_cores) the LLM's scores and the start of each reply. A library's thread
pool waits for all its threads at each step; beside another pool on 2 cores those waits became
whole scheduler slices, and both ran ~10x slower than one after the other."""


class CoreTurn:
    """The start of a reply holds :data:`CORES` until its first token, at most ``limit_s``
    (a model that hangs must not keep Whisper out for long)."""

    def __init__(self, limit_s: float = 1.5) -> None:
        self.limit_s = limit_s
        self._held = False
        self._timer: asyncio.TimerHandle | None = None

    async def take(self, priority: int = URGENT) -> None:
        await CORES.acquire(priority)
        self._held = True
        self._timer = asyncio.get_running_loop().call_later(self.limit_s, self.release)

    def release(self) -> None:
        """Idempotent: the first token, the limit or the stream's end, whichever comes first."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            self._held = False
            CORES.release()
