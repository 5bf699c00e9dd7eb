"""Where the event loop was when it stopped running: the stack behind a stall, in the log.

:class:`~voice_agent.core.loop_lag.LoopLagMonitor` says *that* the loop ran late (a full bench
run at eight sessions once saw one ~240 ms stall, three sessions' audio frames late at the same
moment), not *why*. A watcher thread that finds the loop silent for ``threshold_s`` logs the
loop thread's stack once per stall: Python code on it (a slow callback) names itself; a loop
waiting in ``select`` that did not wake up was starved of CPU by other threads.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)


class LoopStallReporter:
    """Logs the loop thread's stack when the loop has not run for ``threshold_s``; at most one
    report per stall and one per ``quiet_s`` (an overloaded server must not flood its log)."""

    def __init__(self, threshold_s: float = 0.2, *, check_s: float = 0.02,
                 quiet_s: float = 10.0) -> None:
        self.threshold_s = threshold_s
        self.check_s = check_s
        self.quiet_s = quiet_s
        self.reports = 0
        self._beat = time.monotonic()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """From the loop to watch (a no-op for a threshold of 0)."""
        if self.threshold_s <= 0 or self._thread is not None:
            return
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        self._thread = threading.Thread(target=self._watch, name="loop-stall", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(self.check_s)

    def _watch(self) -> None:
        reported_beat = last_report = -1e9
        while not self._stop.wait(self.check_s):
            beat = self._beat
            silent = time.monotonic() - beat
            if silent < self.threshold_s or beat == reported_beat:
                continue
            if time.monotonic() - last_report < self.quiet_s:
                continue
            reported_beat, last_report = beat, time.monotonic()
            self.reports += 1
            frame = sys._current_frames().get(self._loop_thread or 0)
            where = "".join(traceback.format_stack(frame, limit=12)) if frame else "(no stack)\n"
            log.warning("event loop has not run for %.0f ms; its thread is at:\n%s",
                        silent * 1000, where.rstrip())
