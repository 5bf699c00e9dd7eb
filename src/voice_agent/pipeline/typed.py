"""Typed messages become turns; a burst of them becomes one.

Why: each typed message is a whole turn that cuts the reply under way and starts another. A
client sending 45 a second (within the message limit) had the LLM start and drop a reply 45
times a second; with one model for every session, another session's reply went from 0.9 s to
4.4-5.6 s (``voice-agent bench flood``). A person does not type two messages within
``BURST_GAP_S`` of each other; a paste of several lines, a double send or a script does. So a
message that follows the previous one that closely cuts the reply under way at once, as any
typed message does, but is held, joined to any other held text, and becomes one turn once the
messages stop for ``BURST_GAP_S``: a flood costs the start of one reply and one whole reply at
its end, a double send is one question, and no word of it is dropped unless the burst outgrows
``max_chars`` (then its oldest words go, and the log says so).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..core.tasks import TaskSet

log = logging.getLogger(__name__)

BURST_GAP_S = 0.3
"""Messages closer together than this are one burst (a person types slower than that)."""
MAX_BURST_CHARS = 4000
"""The longest turn a burst makes: that of one typed message (protocol.MAX_TEXT_CHARS)."""


class TypedTurns:
    """Hands typed text to ``deliver`` as turns: at once, or at the end of a burst."""

    def __init__(self, deliver: Callable[[str], Awaitable[None]],
                 interrupt: Callable[[], Awaitable[None]], tasks: TaskSet, *,
                 max_chars: int = MAX_BURST_CHARS, gap_s: float = BURST_GAP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._deliver, self._interrupt, self._tasks = deliver, interrupt, tasks
        self.max_chars, self.gap_s, self._clock = max_chars, gap_s, clock
        self._last_at: float | None = None
        self.held = ""
        """Text of the burst under way, not delivered yet."""
        self.joined = 0
        """Messages joined into bursts so far."""
        self._timer: asyncio.Task[None] | None = None

    async def push(self, text: str) -> None:
        now = self._clock()
        burst = self._last_at is not None and now - self._last_at < self.gap_s
        self._last_at = now
        if not burst and not self.held:
            await self._deliver(text)
            return
        self.joined += 1
        starts = not self.held
        self.held = f"{self.held}\n{text}" if self.held else text
        if len(self.held) > self.max_chars:
            log.warning("%s: a burst of typed messages is over %d characters: its oldest words "
                        "are dropped", self._tasks.owner, self.max_chars)
            self.held = self.held[-self.max_chars:]
        if self._timer is None or self._timer.done():
            self._timer = self._tasks.spawn(self._at_burst_end(), "typed-burst")
        if starts:  # the reply to the message before is cut now, as that message would have
            await self._interrupt()

    async def _at_burst_end(self) -> None:
        while True:
            assert self._last_at is not None
            left = self._last_at + self.gap_s - self._clock()
            if left <= 0:
                break
            await asyncio.sleep(left)
        text, self.held = self.held, ""
        if text:
            await self._deliver(text)

    def take_held(self) -> str:
        """The burst not delivered yet (at close: the transcript keeps it)."""
        text, self.held = self.held, ""
        return text
