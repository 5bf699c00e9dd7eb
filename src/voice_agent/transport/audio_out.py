"""The agent's voice: resampled, cut into fixed frames, paced in real time.

:class:`FrameQueue` holds the frames: it is the sink (``pipeline.sink.SinkBase``) of every
real-time transport. :class:`OutgoingAudioTrack` sends its frames over WebRTC; the WebSocket
transport's sender sends them as binary messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections import deque

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..pipeline.sink import SinkBase
from ..services.base import AudioChunk

WEBRTC_RATE = 48_000
FRAME_MS = 20
MAX_QUEUED_S = 2.0
CONSUMER_GONE_S = 1.0
"""play() stops waiting for room (and drops audio) when nobody has taken a frame this long."""
RESYNC_BEHIND_S = 0.2
"""If the sender falls this far behind its clock (a stalled loop) it restarts the clock rather
than bursting the missed frames out at once."""


def resample_mono_s16(resampler: av.AudioResampler, pcm: np.ndarray, rate: int) -> np.ndarray:
    """Feed int16 mono samples at ``rate`` through ``resampler``; return what it gives back."""
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)


class FrameQueue(SinkBase):
    """Audio waiting to be sent, as fixed frames of int16 mono at ``rate``: the sink of every
    real-time transport (the WebRTC track and the WebSocket sender take frames from it).

    One resampler per input rate keeps its filter state between chunks, so chunk joins are
    seamless. The partial frame at the end of a burst is padded with silence when it is taken.
    A queue nobody takes frames from (no track yet, or a peer that went away) drops its audio:
    what is queued would never be heard, and nobody may wait for it.
    """

    def __init__(self, rate: int = WEBRTC_RATE, frame_ms: int = FRAME_MS,
                 max_queued_s: float = MAX_QUEUED_S) -> None:
        super().__init__()
        self.rate = rate
        self.frame_samples = rate * frame_ms // 1000
        self.max_queued_s = max_queued_s
        self._frames: deque[np.ndarray] = deque()
        self._partial = np.zeros(0, np.int16)
        self._resamplers: dict[int, av.AudioResampler] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._has_audio = asyncio.Event()
        self._generation = 0
        self._closed = False
        self._last_take = time.monotonic()
        self._attached = True
        self.frames_sent = 0
        self.audio_frames_sent = 0
        self.dropped_s = 0.0

    # -- the sink ------------------------------------------------------------------------------
    async def play(self, chunk: AudioChunk) -> None:
        generation = self._generation
        while not self._closed and self.queued_s() > self.max_queued_s and not self.consumer_gone():
            self._room.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when the
            # awaited event is set in the same loop turn as the task is cancelled (clear() then
            # cancel, which is what a barge-in does), and the cancel is lost: the reply task
            # then parked forever and the session went deaf (issue #12).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await self._room.wait()
        if self._closed or generation != self._generation:
            return  # cleared (barge-in) while waiting: this audio belongs to the old reply
        if not self.attached or self.consumer_gone():  # nobody takes frames: don't stall
            self.dropped_s += chunk.duration_s + self._queued_s()
            self._drop_queued()
            return
        self._push(chunk)

    @property
    def attached(self) -> bool:
        """False while no consumer exists (a WebRTC session before its track): audio is dropped."""
        return self._attached

    @attached.setter
    def attached(self, value: bool) -> None:
        if value and not self._attached:
            self._last_take = time.monotonic()  # the consumer's grace period starts now
        self._attached = value

    def consumer_gone(self) -> bool:
        return not self.attached or time.monotonic() - self._last_take > CONSUMER_GONE_S

    def pause(self) -> None:
        super().pause()
        self._has_audio.clear()  # the WebSocket sender waits instead of polling

    def resume(self) -> None:
        super().resume()
        if self.has_audio():
            self._has_audio.set()

    def clear(self) -> None:
        self._drop_queued()
        # Fresh resamplers: the old ones hold the tail of the interrupted audio.
        self._resamplers.clear()
        self._generation += 1
        self._reset()

    def queued_s(self) -> float:
        if self.has_audio() and self.consumer_gone():
            # Nobody takes frames (peer not connected, or gone): what is queued will never be
            # heard, and callers that wait for playout must not wait forever.
            self.dropped_s += self._queued_s()
            self._drop_queued()
        return self._queued_s()

    async def finished(self) -> None:
        while self.has_audio():
            if self.consumer_gone():
                self.queued_s()  # drops it
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONSUMER_GONE_S):
                    await self._drained.wait()

    def _queued_s(self) -> float:
        return (len(self._frames) * self.frame_samples + len(self._partial)) / self.rate

    def _drop_queued(self) -> None:
        self._frames.clear()
        self._partial = np.zeros(0, np.int16)
        self._room.set()
        self._has_audio.clear()
        self._ran_dry(time.monotonic())

    # -- consumer side ------------------------------------------------------------------------
    def _push(self, chunk: AudioChunk) -> None:
        pcm = np.asarray(chunk.pcm)
        if pcm.dtype != np.int16:  # tolerate float input in [-1, 1]
            pcm = (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
        if chunk.sample_rate != self.rate:
            resampler = self._resamplers.get(chunk.sample_rate)
            if resampler is None:
                resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
                self._resamplers[chunk.sample_rate] = resampler
            pcm = resample_mono_s16(resampler, pcm, chunk.sample_rate)
        data = np.concatenate([self._partial, pcm.reshape(-1)]) if len(self._partial) else pcm
        n = len(data) // self.frame_samples
        for i in range(n):
            self._frames.append(data[i * self.frame_samples:(i + 1) * self.frame_samples])
        self._partial = data[n * self.frame_samples:].copy()
        if self.has_audio():
            self._queued()
            if not self._paused:
                self._has_audio.set()

    async def wait_for_audio(self) -> None:
        """Return once audio is queued (a sender's idle wait)."""
        await self._has_audio.wait()

    def has_audio(self) -> bool:
        return bool(self._frames) or len(self._partial) > 0

    def take(self) -> np.ndarray | None:
        """The next frame, or None when nothing is queued (the burst has ended)."""
        now = time.monotonic()
        self._last_take = now
        self.frames_sent += 1
        if self._paused:  # the consumer sends silence; nothing is dropped, no burst ends
            return None
        if self._frames:
            frame = self._frames.popleft()
        elif len(self._partial):
            frame = np.zeros(self.frame_samples, np.int16)
            frame[:len(self._partial)] = self._partial
            self._partial = np.zeros(0, np.int16)
        else:
            self._room.set()
            self._has_audio.clear()
            self._ran_dry(now)
            return None
        self.audio_frames_sent += 1
        self._sent(self.frame_samples / self.rate, now)
        if self.queued_s() <= self.max_queued_s:
            self._room.set()
        return frame

    def close(self) -> None:
        self._closed = True
        self.clear()


class OutgoingAudioTrack(MediaStreamTrack):
    """WebRTC audio track: 20 ms frames of 48 kHz mono s16, silence when there is nothing to say.

    It reads the frames of ``queue``, the session's sink; a new queue when none is given.
    """

    kind = "audio"

    def __init__(self, queue: FrameQueue | None = None) -> None:
        super().__init__()
        self.queue = queue if queue is not None else FrameQueue(WEBRTC_RATE, FRAME_MS)
        self._time_base = fractions.Fraction(1, WEBRTC_RATE)
        self._t0: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = self.queue.frame_samples
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        else:
            self._pts += samples
            wait = self._t0 + self._pts / WEBRTC_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -RESYNC_BEHIND_S:
                self._t0 = now - self._pts / WEBRTC_RATE
        if self.readyState != "live":
            raise MediaStreamError
        pcm = self.queue.take()
        if pcm is None:
            pcm = np.zeros(samples, np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WEBRTC_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        return frame

    def stop(self) -> None:
        self.queue.close()
        super().stop()
