"""Which conversation holds which of the local LLM's slots, and who waits for one.

llama.cpp's server runs ``n_parallel`` slots, each with its own KV cache, batched together
(continuous batching): several replies are written at once. A request names its slot
(``id_slot``); a conversation kept on the same slot finds its history still cached there.

Two kinds of users take slots:

* replies (:meth:`SlotTable.acquire`, in the event loop): they wait their turn, first come first
  served, when every slot is busy;
* side jobs, prefills and end-of-turn scores (:meth:`SlotTable.try_acquire`, any thread): they
  never make a reply wait. They get nothing while a reply waits for a slot or for its first
  token, nor when no slot is free.

Callers that name no conversation (``None``) share one, as every caller shared the one slot
before: their replies take turns and keep their prompts in one slot's cache.

A slot is released only when its user says so; the LLM service releases a reply's slot when
both the reply is over and its generation thread has returned (see ``LlamaCppLLM.reserve``).
Thread-safe: side jobs and releases come from worker threads; a waiting reply is woken in its
own loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

_tick = itertools.count(1)
_NOBODY = object()


@dataclass(slots=True, eq=False)
class _Waiter:
    conversation: Hashable | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]


@dataclass(slots=True)
class _Slot:
    owner: object = _NOBODY
    """The conversation whose tokens the slot's cache holds."""
    busy: bool = False
    starting: bool = False
    """Held by a reply that has not produced its first token yet."""
    used: int = 0
    """When it was last handed out (a counter): the least recently used free slot is reused."""


@dataclass
class SlotTable:
    size: int
    _slots: list[_Slot] = field(init=False)
    _waiters: deque[_Waiter] = field(init=False, default_factory=deque)
    _cond: threading.Condition = field(init=False, default_factory=threading.Condition)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a slot table needs at least one slot")
        self._slots = [_Slot() for _ in range(self.size)]

    # -- state ---------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Replies waiting for a slot."""
        with self._cond:
            return len(self._waiters)

    @property
    def busy(self) -> int:
        """Slots in use (a reply, a side job, or a thread not yet returned)."""
        with self._cond:
            return sum(s.busy for s in self._slots)

    def owner(self, slot: int) -> Hashable | None:
        """The conversation ``slot`` was last handed to (None also when nobody's yet)."""
        with self._cond:
            owner = self._slots[slot].owner
            return None if owner is _NOBODY else owner  # type: ignore[return-value]

    def wait_idle(self, timeout: float) -> bool:
        """Block until no slot is in use (True), or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(s.busy for s in self._slots), timeout)

    # -- taking and giving back ----------------------------------------------------------------

    async def acquire(self, conversation: Hashable | None) -> int:
        """A slot for a reply in ``conversation``: its own if it has one (waiting for it while
        it finishes something else: that is shorter than reading the history again elsewhere),
        else a free one; in order of arrival when none is free. Cancellable."""
        loop = asyncio.get_running_loop()
        with self._cond:
            waiter = _Waiter(conversation, loop, loop.create_future())
            self._waiters.append(waiter)
            self._grant()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            with self._cond:
                if waiter in self._waiters:  # never granted: just leave the line
                    self._waiters.remove(waiter)
                    self._grant()  # someone behind may fit now that the line is shorter
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())  # granted as we were cancelled
            raise

    def try_acquire(self, conversation: Hashable | None, timeout: float = 0.0) -> int | None:
        """A slot for a side job in ``conversation`` (its own, else a free one), or None: some
        reply waits for a slot or for its first token, or no slot is free within ``timeout``
        s (blocking: call it from a thread when ``timeout`` > 0)."""
        with self._cond:
            slot: int | None = None

            def ready() -> bool:
                nonlocal slot
                if self._waiters or any(s.starting for s in self._slots):
                    return True  # a reply goes first: give up at once
                slot = self._choose(conversation)
                return slot is not None

            self._cond.wait_for(ready, timeout)
            if slot is None:
                return None
            self._take(slot, conversation, starting=False)
            return slot

    def started(self, slot: int) -> None:
        """The reply in ``slot`` produced its first token: side jobs may run beside it now."""
        with self._cond:
            self._slots[slot].starting = False
            self._cond.notify_all()

    def release(self, slot: int) -> None:
        """``slot`` is free again (its thread has returned); hand it to whoever waits."""
        with self._cond:
            state = self._slots[slot]
            if not state.busy:
                raise RuntimeError(f"slot {slot} released twice")
            state.busy = state.starting = False
            self._grant()
            self._cond.notify_all()

    # -- under the lock ------------------------------------------------------------------------

    def _choose(self, conversation: Hashable | None) -> int | None:
        own = [i for i, s in enumerate(self._slots) if s.owner == conversation]
        if own:  # its history is cached there: wait for it rather than read it again elsewhere
            return own[0] if not self._slots[own[0]].busy else None
        free = [i for i, s in enumerate(self._slots) if not s.busy]
        if not free:
            return None
        # A slot nobody owns, else the one whose conversation has been quiet longest.
        return min(free, key=lambda i: (self._slots[i].owner is not _NOBODY, self._slots[i].used))

    def _take(self, slot: int, conversation: Hashable | None, *, starting: bool) -> None:
        state = self._slots[slot]
        state.busy, state.starting, state.used = True, starting, next(_tick)
        state.owner = conversation

    def _grant(self) -> None:
        """Hand free slots to waiting replies, in order; a reply waiting for its own busy slot
        does not hold up those behind it that can use another."""
        for waiter in list(self._waiters):
            if waiter.future.cancelled():
                self._waiters.remove(waiter)
                continue
            slot = self._choose(waiter.conversation)
            if slot is None:
                continue
            self._waiters.remove(waiter)
            self._take(slot, waiter.conversation, starting=True)
            try:
                waiter.loop.call_soon_threadsafe(self._deliver, waiter.future, slot)
            except RuntimeError:  # its loop closed: nobody waits there any more
                self._slots[slot].busy = self._slots[slot].starting = False

    def _deliver(self, future: asyncio.Future[int], slot: int) -> None:
        """In the waiter's loop: the slot, unless the waiter was cancelled meanwhile."""
        if future.cancelled():
            self.release(slot)
        else:
            future.set_result(slot)


@dataclass(eq=False)
class SlotHold:
    """One reply's slot, given back when the reply is over and every generation thread it
    started has returned: each takes a reference (:meth:`add`) and gives it back (:meth:`done`)."""

    table: SlotTable
    slot: int
    users: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self) -> None:
        with self.lock:
            self.users += 1

    def done(self) -> None:
        with self.lock:
            self.users -= 1
            last = self.users == 0
        if last:
            self.table.release(self.slot)
