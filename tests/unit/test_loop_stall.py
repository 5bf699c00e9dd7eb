"""The stall reporter: the log says where the event loop's thread was when the loop stopped."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from voice_agent.core.loop_lag import LoopLagMonitor
from voice_agent.core.loop_stall import LoopStallReporter


def a_slow_callback_on_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # as a model run on the loop, or a long piece of Python, would


async def test_a_blocked_loop_is_logged_once_with_the_blocking_code(
        caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopLagMonitor(interval_s=0.02)
    reporter = LoopStallReporter(monitor, threshold_s=0.15, check_s=0.01)
    caplog.set_level(logging.WARNING, logger="voice_agent.core.loop_stall")
    monitor.start()
    reporter.start()
    try:
        await asyncio.sleep(0.3)
        assert reporter.reports == 0  # an idle loop runs on time
        a_slow_callback_on_the_loop(0.5)
        await asyncio.sleep(0.1)
        assert reporter.reports == 1  # one stall, one report, however long it lasted
        [record] = [r for r in caplog.records if "has not run" in r.getMessage()]
        assert "a_slow_callback_on_the_loop" in record.getMessage()
    finally:
        await reporter.stop()
        await monitor.stop()


async def test_reports_are_spaced_and_zero_turns_it_off() -> None:
    monitor = LoopLagMonitor(interval_s=0.02)
    reporter = LoopStallReporter(monitor, threshold_s=0.1, check_s=0.01, quiet_s=60.0)
    monitor.start()
    reporter.start()
    try:
        for _ in range(2):
            a_slow_callback_on_the_loop(0.3)
            await asyncio.sleep(0.05)
        assert reporter.reports == 1  # the second stall falls in the quiet time
    finally:
        await reporter.stop()
    off = LoopStallReporter(monitor, threshold_s=0)
    off.start()
    a_slow_callback_on_the_loop(0.2)
    await asyncio.sleep(0.05)
    assert off.reports == 0
    await off.stop()
    await monitor.stop()
