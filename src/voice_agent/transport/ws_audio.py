"""Raw-PCM audio over a WebSocket (``/ws/v3/audio``), for clients without WebRTC.

Framing (see docs/protocol.md):
- binary frames, client -> server: 16-bit little-endian signed PCM, mono, at the session rate
  (16 kHz unless the client connects with ``?rate=8000|16000|24000|48000``), any length (an even
  number of bytes; 20-100 ms per frame is typical);
- binary frames, server -> client: the agent's voice, same encoding and rate, 20 ms per frame,
  paced at real time (slightly ahead), so that an interrupt silences it at once;
- text frames: the JSON messages of the signaling socket (text, interrupt, ping, end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..services.base import STT_SAMPLE_RATE
from .audio_in import AudioResampler16k, InboundStats, PushAudio, pcm16_to_frame
from .audio_out import FRAME_MS, MAX_QUEUED_S, FrameQueue
from .pacing import RealTimePacer
from .protocol import ErrorCode

log = logging.getLogger(__name__)

SUPPORTED_RATES = (8000, 16000, 24000, 48000)
SEND_AHEAD_S = 0.06
"""Audio sent this far ahead of real time, to ride out network jitter at the client."""
IDLE_POLL_S = 0.5
MAX_FRAME_BYTES = 48000 * 2 * 2
"""At most 2 s of audio per binary frame at the highest rate."""


class AudioFormatError(ValueError):
    code = ErrorCode.INVALID_MESSAGE


def parse_rate(value: str | None) -> int:
    if value is None or value == "":
        return STT_SAMPLE_RATE
    try:
        rate = int(value)
    except ValueError:
        raise AudioFormatError(f"rate must be an integer, got {value[:16]!r}") from None
    if rate not in SUPPORTED_RATES:
        raise AudioFormatError(f"rate must be one of {SUPPORTED_RATES}, got {rate}")
    return rate


class WebSocketAudioSender:
    """Sends the frames of a :class:`FrameQueue` as paced binary messages of PCM16 LE mono."""

    def __init__(self, queue: FrameQueue, send: Callable[[bytes], None]) -> None:
        self.queue = queue
        self._send = send
        self._task: asyncio.Task[None] | None = None
        self.bytes_sent = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        rate = self.queue.rate
        frame_s = self.queue.frame_samples / rate
        t0: float | None = None
        n = 0
        while True:
            pcm = self.queue.take()  # also tells the queue its consumer is alive
            if pcm is None:
                t0 = None
                # Woken by new audio; the timeout keeps telling the queue we are alive.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL_S):
                        await self.queue.wait_for_audio()
                continue
            now = time.monotonic()
            if t0 is None:
                t0, n = now - SEND_AHEAD_S, 0
            data = pcm.astype("<i2").tobytes()
            self._send(data)
            self.bytes_sent += len(data)
            n += 1
            wait = t0 + n * frame_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def close(self) -> None:
        self.queue.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class WebSocketAudioTransport:
    """Inbound PCM frames -> 16 kHz float32 for the pipeline; the sink sends the agent's voice."""

    def __init__(self, session_id: str, rate: int, send: Callable[[bytes], None],
                 push_audio: PushAudio, *, pacer: RealTimePacer | None = None,
                 on_paced: Callable[[], None] | None = None) -> None:
        self.session_id = session_id
        self.rate = rate
        self.sink = FrameQueue(rate, FRAME_MS, MAX_QUEUED_S)
        self.sender = WebSocketAudioSender(self.sink, send)
        self.inbound = InboundStats()
        self._push_audio = push_audio
        self._resample = AudioResampler16k() if rate != STT_SAMPLE_RATE else None
        self._odd_byte = b""
        self.pacer = pacer or RealTimePacer()
        self._on_paced = on_paced
        """Told once, the first time the client's audio had to be paced."""

    def start(self) -> None:
        self.sender.start()

    def audio_format(self) -> dict[str, Any]:
        return {"encoding": "pcm_s16le", "sample_rate": self.rate, "channels": 1,
                "frame_ms": FRAME_MS}

    async def handle_binary(self, data: bytes) -> None:
        if len(data) > MAX_FRAME_BYTES:
            raise AudioFormatError(f"audio frame of {len(data)} bytes is over {MAX_FRAME_BYTES}")
        data = self._odd_byte + data  # a sample split across frames is joined, not dropped
        cut = len(data) - (len(data) % 2)
        self._odd_byte = data[cut:]
        if cut == 0:
            return
        pcm16 = np.frombuffer(data[:cut], dtype="<i2")
        self.inbound.frames += 1
        if self._resample is not None:
            pcm = self._resample(pcm16_to_frame(pcm16, self.rate))
        else:
            pcm = pcm16.astype(np.float32) / 32768.0
        if not len(pcm):
            return
        self.inbound.samples_16k += len(pcm)
        self.inbound.peak = max(self.inbound.peak, float(np.abs(pcm).max()))
        await self._push_audio(pcm)
        # After the frame, before the next read: a client ahead of real time waits here.
        if await self.pacer.take(len(pcm) / STT_SAMPLE_RATE) and self._on_paced is not None:
            on_paced, self._on_paced = self._on_paced, None
            log.info("session %s: audio arrives faster than real time; reading it at real "
                     "time", self.session_id)
            on_paced()

    async def stats(self) -> dict[str, Any]:
        return {"transport": "websocket_audio", **self.audio_format(),
                "inbound_audio_s": round(self.inbound.seconds, 3),
                "inbound_peak": round(self.inbound.peak, 4),
                "inbound_paced_s": round(self.pacer.paced_s, 3),
                "audio_bytes_sent": self.sender.bytes_sent,
                "outbound_queued_s": round(self.sink.queued_s(), 3)}

    async def close(self) -> None:
        await self.sender.close()
