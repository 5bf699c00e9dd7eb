"""The user's voice: an inbound aiortc track decoded, resampled to 16 kHz mono float32."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..services.base import STT_SAMPLE_RATE

log = logging.getLogger(__name__)

PushAudio = Callable[[np.ndarray], Awaitable[None]]


@dataclass
class InboundStats:
    frames: int = 0
    samples_16k: int = 0
    peak: float = 0.0
    push_errors: int = 0
    """Loudest sample seen so far, in [0, 1] (tells a muted microphone from a working one)."""

    @property
    def seconds(self) -> float:
        return self.samples_16k / STT_SAMPLE_RATE


class AudioResampler16k:
    """Any s16/float frame layout and rate -> float32 mono 16 kHz in [-1, 1]."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=STT_SAMPLE_RATE)

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, np.float32)
        return np.concatenate(out).astype(np.float32) / 32768.0


def pcm16_to_frame(pcm: np.ndarray, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


async def consume_audio_track(track: MediaStreamTrack, push: PushAudio,
                              stats: InboundStats | None = None,
                              on_frame: Callable[[], None] | None = None) -> None:
    """Read ``track`` until it ends, handing 16 kHz audio to ``push`` frame by frame.

    Returns (never raises) when the track ends or the peer goes away.
    """
    stats = stats if stats is not None else InboundStats()
    resample = AudioResampler16k()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return  # the remote track ended: normal on disconnect
        stats.frames += 1
        if on_frame is not None:
            on_frame()
        pcm = resample(frame)
        if not len(pcm):
            continue
        stats.samples_16k += len(pcm)
        stats.peak = max(stats.peak, float(np.abs(pcm).max()))
        try:
            await push(pcm)
        except Exception:  # one bad frame must not stop listening for the rest of the session
            stats.push_errors += 1
            if stats.push_errors == 1 or stats.push_errors % 500 == 0:
                log.exception("audio consumer: push failed (%d so far)", stats.push_errors)


async def drain_track(track: MediaStreamTrack, counter: list[int]) -> None:
    """Read and discard a track (video we do not use), so aiortc's queue does not grow."""
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
        counter[0] += 1
