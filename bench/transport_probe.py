"""One-way audio latency of the WebRTC stack itself, measured on loopback with one clock.

Two aiortc peers in this process (the same library, codec and jitter buffer the server uses):
one sends a short tone burst every ``interval_s``, the other timestamps the first loud sample of
each burst. Both ends read ``time.monotonic()``, so arrival − send is the true one-way latency
(Opus encode + UDP over loopback + SRTP + jitter buffer + decode), with no clock sync needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from .client import FRAME, LOUD, _mono_s16
from .speech_set import RATE


class BurstTrack(MediaStreamTrack):
    """Silence with a 40 ms 1 kHz burst starting on a frame boundary every ``interval_s``."""

    kind = "audio"

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__()
        self.every = max(1, int(interval_s * RATE / FRAME))
        self.sent_at: list[float] = []  # release time of each burst's first frame
        self._t0: float | None = None
        self._pts = 0
        t = np.arange(2 * FRAME) / RATE
        self._burst = (np.sin(2 * np.pi * 1000 * t) * 12000).astype(np.int16)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        wait = self._t0 + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        n = self._pts // FRAME
        pcm = np.zeros(FRAME, np.int16)
        phase = n % self.every
        if n >= self.every and phase < 2:  # skip the first interval: let ICE/DTLS settle
            pcm[:] = self._burst[phase * FRAME:(phase + 1) * FRAME]
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        if n >= self.every and phase == 0:
            self.sent_at.append(time.monotonic())
        return frame


async def _onsets(track: MediaStreamTrack, out: list[float], stop: asyncio.Event) -> None:
    quiet = True
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while not stop.is_set():
            frame = await track.recv()
            now = time.monotonic()
            loud = np.flatnonzero(np.abs(_mono_s16(frame).astype(np.int32)) > LOUD)
            if len(loud) and quiet:
                out.append(now + int(loud[0]) / (frame.sample_rate or RATE))
            quiet = len(loud) == 0


async def one_way_latency_ms(bursts: int = 20, interval_s: float = 0.5,
                             timeout_s: float = 30.0) -> list[float]:
    """One-way latencies (ms) of ``bursts`` tone bursts between two loopback aiortc peers."""
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender = BurstTrack(interval_s)
    arrivals: list[float] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @b.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.create_task(_onsets(track, arrivals, stop)))

    try:
        a.addTrack(sender)
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        deadline = time.monotonic() + timeout_s
        while len(arrivals) < bursts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)
    # Pair each arrival with the latest burst sent before it.
    out: list[float] = []
    for arrived in arrivals:
        sent = [s for s in sender.sent_at if s <= arrived]
        if sent and arrived - sent[-1] < interval_s / 2:
            out.append(round((arrived - sent[-1]) * 1000, 1))
    return out
