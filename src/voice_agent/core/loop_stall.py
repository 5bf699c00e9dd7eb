"""Where the event loop was when it stopped running: the stack behind a stall, in the log.

:class:`~voice_agent.core.loop_lag.LoopLagMonitor` says *that* the loop ran late (a full bench
run at eight sessions once saw one ~240 ms stall, three sessions' audio frames late at the same
moment), not *why*. A watcher thread that finds the monitor not woken for ``threshold_s`` past
its interval logs the loop thread's stack once per stall: Python code on it (a slow callback)
names itself; a loop waiting in ``select`` that did not wake up was starved of CPU by other
threads.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from .loop_lag import LoopLagMonitor

log = logging.getLogger(__name__)


class LoopStallReporter:
    """Logs the loop thread's stack when ``monitor`` (running on that loop) has not woken for
    ``threshold_s`` past its interval; at most one report per stall and one per ``quiet_s`` (an
    overloaded server must not flood its log)."""

    def __init__(self, monitor: LoopLagMonitor, threshold_s: float = 0.2, *,
                 check_s: float = 0.02, quiet_s: float = 10.0) -> None:
        self.monitor = monitor
        self.threshold_s = threshold_s
        self.check_s = check_s
        self.quiet_s = quiet_s
        self.reports = 0
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """From the loop to watch, after the monitor's start (a no-op for a threshold of 0)."""
        if self.threshold_s <= 0 or self._thread is not None:
            return
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="loop-stall", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)

    def _watch(self) -> None:
        reported_wake = last_report = -1e9
        while not self._stop.wait(self.check_s):
            wake = self.monitor.last_wake
            silent = time.monotonic() - wake - self.monitor.interval_s
            if silent < self.threshold_s or wake == reported_wake:
                continue
            if time.monotonic() - last_report < self.quiet_s:
                continue
            reported_wake, last_report = wake, time.monotonic()
            self.reports += 1
            frame = sys._current_frames().get(self._loop_thread or 0)
            where = "".join(traceback.format_stack(frame, limit=12)) if frame else "(no stack)\n"
            log.warning("event loop has not run for %.0f ms; its thread is at:\n%s",
                        silent * 1000, where.rstrip())
