"""Real aiortc peers on loopback for tests: a paced WAV player track and a track recorder."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

RATE = 48_000
FRAME = 960


def new_peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class PcmPlayerTrack(MediaStreamTrack):
    """Plays int16 mono PCM (any rate, resampled to 48 kHz) paced at real time, then silence."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray | None = None, rate: int = RATE) -> None:
        super().__init__()
        self._samples = np.zeros(0, np.int16)
        self._t0: float | None = None
        self._pts = 0
        self.finished = asyncio.Event()
        if pcm is not None:
            self.load(pcm, rate)

    def load(self, pcm: np.ndarray, rate: int) -> None:
        """Queue audio to play after what is already queued."""
        pcm = np.asarray(pcm, np.int16)
        if rate != RATE:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            out = resampler.resample(frame) + resampler.resample(None)
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.int16)
        self._samples = np.concatenate([self._samples, pcm])
        self.finished.clear()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            self._pts += FRAME
            wait = self._t0 + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = self._samples[:FRAME]
        self._samples = self._samples[FRAME:]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), np.int16)])
            self.finished.set()
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class TrackRecorder:
    """Reads a remote audio track; keeps 48 kHz mono int16 with each frame's arrival time."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.frames: list[tuple[float, np.ndarray]] = []
        self._task = asyncio.get_running_loop().create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                self.frames.append((time.monotonic(), out.to_ndarray().reshape(-1).copy()))

    def audio(self, since: float = 0.0) -> np.ndarray:
        chunks = [pcm for t, pcm in self.frames if t >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def rms_per_window(self, since: float = 0.0, window_s: float = 0.1) -> list[tuple[float, float]]:
        """(arrival time, RMS in [0, 1]) per window of received frames."""
        out: list[tuple[float, float]] = []
        frames = [(t, p) for t, p in self.frames if t >= since]
        per = max(1, int(window_s / 0.02))
        for i in range(0, len(frames), per):
            group = frames[i:i + per]
            pcm = np.concatenate([p for _, p in group]).astype(np.float32) / 32768
            out.append((group[0][0], float(np.sqrt(np.mean(pcm ** 2)))))
        return out

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


def rms(pcm: np.ndarray) -> float:
    if not len(pcm):
        return 0.0
    x = pcm.astype(np.float32) / 32768
    return float(np.sqrt(np.mean(x ** 2)))


def tone(seconds: float, rate: int, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


async def wait_for(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())
