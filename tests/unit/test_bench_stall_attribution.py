"""The latency bench tells a gap made by its own frozen loop from one in the server's audio."""

from __future__ import annotations

from bench.latency import stalls_made_by_client
from voice_agent.core.loop_lag import LoopLagMonitor


def test_a_gap_is_the_clients_only_when_its_freeze_covers_it() -> None:
    lag = LoopLagMonitor(window_s=600.0)
    for t in range(100, 131):
        lag.record(t / 10, 0.002)  # on time, every 100 ms
    lag.record(12.0, 0.9)  # frozen from 11.1 to 12.0
    lag.record(13.2, 0.001)
    frozen_gap = (11.05, 12.02)  # 970 ms, of which 900 ms frozen: the client's
    server_gap = (12.3, 12.8)  # 500 ms with the client's loop on time: the server's
    partly = (10.5, 12.0)  # 1.5 s with 0.9 s frozen: 600 ms left, still a stall
    assert stalls_made_by_client([frozen_gap], lag) == 1
    assert stalls_made_by_client([server_gap], lag) == 0
    assert stalls_made_by_client([partly], lag) == 0
    assert stalls_made_by_client([frozen_gap, server_gap, partly], lag) == 1
    assert stalls_made_by_client([], lag) == 0
