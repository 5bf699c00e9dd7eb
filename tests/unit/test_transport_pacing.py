"""Inbound audio is read no faster than real time (finding 2 of #13: 60 s of speech sent in
1.5 s took ~190% CPU for 7 s and slowed every other session)."""

from __future__ import annotations

import numpy as np

from voice_agent.transport.pacing import RealTimePacer
from voice_agent.transport.ws_audio import WebSocketAudioTransport


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_real_time_audio_is_never_held_back() -> None:
    clock = FakeClock()
    pacer = RealTimePacer(2.0, clock=clock, sleep=clock.sleep)
    for _ in range(500):  # 10 s of 20 ms frames, each arriving on time
        assert await pacer.take(0.02) == 0.0
        clock.now += 0.02
    assert clock.slept == [] and pacer.ahead_s() < 0.03


async def test_a_burst_passes_then_the_rest_is_read_at_real_time() -> None:
    clock = FakeClock()
    pacer = RealTimePacer(2.0, clock=clock, sleep=clock.sleep)
    start = clock.now
    waits = [await pacer.take(0.1) for _ in range(600)]  # 60 s of 0.1 s frames, at once
    # All of it taken in 58 s: real time, less the 2 s burst allowed ahead.
    assert abs((clock.now - start) - 58.0) < 1e-6
    assert waits[:20] == [0.0] * 20 and min(waits[20:]) > 0.09  # 2 s straight through
    assert abs(pacer.paced_s - 58.0) < 1e-6 and pacer.ahead_s() <= 2.0 + 1e-9


async def test_a_client_that_paused_may_catch_up_by_the_burst_only() -> None:
    clock = FakeClock()
    pacer = RealTimePacer(1.0, clock=clock, sleep=clock.sleep)
    await pacer.take(0.5)
    clock.now += 30  # a long silence (no frames at all): no credit is saved up beyond the burst
    for _ in range(30):
        await pacer.take(0.1)
    assert abs(sum(clock.slept) - 2.0) < 1e-6  # 3 s of audio at once: 1 s burst, 2 s paced


async def test_the_ws_audio_transport_paces_and_says_so_once() -> None:
    clock = FakeClock()
    pushed: list[int] = []
    told: list[str] = []

    async def push(pcm: np.ndarray) -> None:
        pushed.append(len(pcm))

    transport = WebSocketAudioTransport(
        "s", 16000, lambda _b: None, push, pacer=RealTimePacer(1.0, clock=clock, sleep=clock.sleep),
        on_paced=lambda: told.append("paced"))
    frame = (np.ones(1600, np.int16) * 1000).tobytes()  # 0.1 s
    start = clock.now
    for _ in range(50):  # 5 s of audio at once
        await transport.handle_binary(frame)
    assert sum(pushed) == 50 * 1600  # nothing dropped
    assert abs((clock.now - start) - 4.0) < 1e-6 and told == ["paced"]
    assert (await transport.stats())["inbound_paced_s"] == 4.0


async def test_a_faster_allowed_speed_paces_at_that_speed() -> None:
    clock = FakeClock()
    pacer = RealTimePacer(1.0, speed=4.0, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(400):  # 40 s of audio at once, 4x real time allowed: 10 s, less the burst
        await pacer.take(0.1)
    assert abs((clock.now - start) - 9.0) < 1e-6
