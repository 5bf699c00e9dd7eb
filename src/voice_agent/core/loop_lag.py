"""How late the event loop runs: the one number that shows a starved server.

Every session's audio (RTP in and out, ICE keep-alives, VAD) runs on the one event loop. When
the loop thread gets too little CPU (model threads fighting it for the cores and the GIL), frames
go out late and ICE consent checks time out. :class:`LoopLagMonitor` sleeps a fixed interval and
records how much later than asked it woke up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LoopLag:
    """Lag of the loop's wake-ups over the window, in milliseconds."""

    window_s: float
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {"window_s": self.window_s, "samples": self.samples, "p50_ms": self.p50_ms,
                "p99_ms": self.p99_ms, "max_ms": self.max_ms}


class LoopLagMonitor:
    """Samples the running loop's lag every ``interval_s``; keeps the last ``window_s``."""

    def __init__(self, interval_s: float = 0.05, window_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()  # (monotonic time, lag s)
        self._task: asyncio.Task[None] | None = None
        self.last_wake = time.monotonic()
        """When the loop last ran this monitor (read from other threads: core/loop_stall.py)."""

    def start(self) -> None:
        if self._task is None or self._task.done():
            self.last_wake = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval_s)
            now = self.last_wake = time.monotonic()
            self.record(now, max(0.0, now - asked - self.interval_s))

    def record(self, now: float, lag_s: float) -> None:
        self._samples.append((now, lag_s))
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()

    def frozen_s(self, start: float, end: float) -> float:
        """Seconds of ``[start, end]`` (monotonic) in which the loop was late: a sample taken at
        ``t`` with lag ``lag`` means the loop did not run in ``[t - lag, t]``."""
        return sum(max(0.0, min(end, t) - max(start, t - lag)) for t, lag in self._samples)

    def snapshot(self) -> LoopLag:
        lags = sorted(lag for _, lag in self._samples)
        if not lags:
            return LoopLag(self.window_s, 0, 0.0, 0.0, 0.0)

        def ms(q: float) -> float:
            return round(lags[min(len(lags) - 1, int(q * len(lags)))] * 1000, 1)

        return LoopLag(self.window_s, len(lags), ms(0.5), ms(0.99), round(lags[-1] * 1000, 1))
