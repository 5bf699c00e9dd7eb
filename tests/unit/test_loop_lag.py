"""The event-loop lag monitor behind /v3/health's ``event_loop_lag``."""

from __future__ import annotations

import asyncio
import time

from voice_agent.core.loop_lag import LoopLagMonitor


async def test_a_blocked_loop_shows_up_as_lag() -> None:
    monitor = LoopLagMonitor(interval_s=0.02)
    monitor.start()
    try:
        await asyncio.sleep(0.1)
        assert monitor.snapshot().max_ms < 150  # an idle loop wakes up on time
        time.sleep(0.3)  # a blocking call in the loop, as a model run outside a thread would be
        await asyncio.sleep(0.1)
        lag = monitor.snapshot()
        assert lag.samples >= 3
        assert 250 <= lag.max_ms < 1000
        assert lag.p50_ms < lag.max_ms
        # The freeze lies in the last 0.4 s, and not before it.
        now = time.monotonic()
        assert 0.25 <= monitor.frozen_s(now - 0.4, now) < 0.4
        assert monitor.frozen_s(now - 1.0, now - 0.5) < 0.05
    finally:
        await monitor.stop()


def test_old_samples_leave_the_window() -> None:
    monitor = LoopLagMonitor(window_s=10.0)
    monitor.record(100.0, 0.5)
    monitor.record(105.0, 0.01)
    assert monitor.snapshot().max_ms == 500.0
    monitor.record(111.0, 0.02)  # the 0.5 s sample is now older than 10 s
    lag = monitor.snapshot()
    assert (lag.samples, lag.max_ms) == (2, 20.0)
    assert LoopLagMonitor().snapshot().samples == 0


def test_frozen_time_inside_a_span() -> None:
    # What the latency bench asks of its own loop for each gap in the agent's audio.
    monitor = LoopLagMonitor(window_s=60.0)
    monitor.record(10.0, 0.0)
    monitor.record(11.0, 0.8)  # the loop did not run from 10.2 to 11.0
    monitor.record(11.05, 0.001)
    assert abs(monitor.frozen_s(10.0, 11.05) - 0.801) < 1e-9
    assert abs(monitor.frozen_s(10.5, 10.7) - 0.2) < 1e-9
    assert monitor.frozen_s(9.0, 10.1) == 0.0
