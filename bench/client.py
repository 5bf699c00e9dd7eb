"""A real WebRTC client for the benchmark: aiortc peer, /ws/v3 signaling, timed audio in and out.

Every timestamp is ``time.monotonic()`` in this process, so "end of speech sent" and "first agent
sample received" are on one clock and their difference is the voice-to-voice latency a user feels
(minus the playout buffer of a real device, which we do not have).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import re
import time
from dataclasses import dataclass, field
from collections.abc import Coroutine
from typing import Any, TypeVar

import av
import numpy as np
from aiortc import (MediaStreamTrack, RTCConfiguration, RTCPeerConnection,
                    RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError

from voice_agent.transport import audio_level
from voice_agent.core.tasks import within

from .speech_set import RATE, SpeechItem

FRAME = RATE * 20 // 1000  # 960 samples: 20 ms at 48 kHz, what Opus carries per packet
T = TypeVar("T")


def run_clients(main: Coroutine[Any, Any, T]) -> T:
    """Run the benchmark's clients on uvloop when it is installed, as the server runs: with
    asyncio's own loop one process of 8 clients lagged up to 1.3 s under load, and that lag
    would be counted as the server's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


BUSY_CODES = ("busy", "server_busy")
"""The server's refusals for want of room (docs/protocol.md, Capacity and load)."""


class SessionRefused(RuntimeError):
    """The server refused the session up front (``busy``): counted as refused, not as failed
    turns, because no turn of it was ever accepted."""

    def __init__(self, message: dict[str, Any], after_ms: float) -> None:
        super().__init__(f"server refused the session: {message.get('code')}: "
                         f"{message.get('message')}")
        self.code = str(message.get("code"))
        self.retry_after_s = message.get("retry_after_s")
        self.after_ms = after_ms
        """Socket opening → the refusal: how up front it was."""


LOUD = 300
"""|sample| above this (about -40 dBFS) is agent speech; decoded Opus silence is near 0."""
STALL_S = 0.200


class SpeechTrack(MediaStreamTrack):
    """Microphone stand-in: plays queued WAVs then silence, 20 ms frames on an absolute clock."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._t0: float | None = None
        self._pts = 0
        self._item: SpeechItem | None = None
        self._pos = 0
        self._done: asyncio.Future[float] | None = None
        self.frames_sent = 0
        self.late_frames = 0  # frames released > 5 ms after their slot: a busy client loop

    def say(self, item: SpeechItem) -> asyncio.Future[float]:
        """Start playing ``item`` at the next frame; the future gets the monotonic time at which
        the frame holding its last speech sample was handed to the encoder."""
        if self._done is not None and not self._done.done():
            self._done.cancel()
        self._item, self._pos = item, 0
        self._done = asyncio.get_running_loop().create_future()
        return self._done

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        # Absolute clock: frame n goes out at t0 + n*20 ms, so sleep jitter never accumulates.
        due = self._t0 + self._pts / RATE
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.005:
            self.late_frames += 1
        pcm = np.zeros(FRAME, np.int16)
        ended_here = False
        item = self._item
        if item is not None:
            chunk = item.samples[self._pos:self._pos + FRAME]
            pcm[:len(chunk)] = chunk
            last = item.speech_end_sample
            ended_here = self._pos <= last < self._pos + FRAME
            self._pos += FRAME
            if self._pos >= len(item.samples):
                self._item = None
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        self.frames_sent += 1
        if ended_here and self._done is not None and not self._done.done():
            self._done.set_result(time.monotonic())
        return frame


@dataclass
class ReplyCapture:
    """What the client heard of one agent reply, from ``armed_at`` on."""

    armed_at: float
    first_audio_at: float | None = None
    last_audio_at: float | None = None
    frames: int = 0
    max_frame_gap_s: float = 0.0
    stall_spans: list[tuple[float, float]] = field(default_factory=list)
    """Gaps > 200 ms between frame arrivals once the reply started: (previous frame's arrival,
    this frame's arrival), monotonic seconds."""
    audio_gaps_ms: list[float] = field(default_factory=list)
    """Silent runs > 200 ms between two loud samples of the reply (sample clock, not arrival)."""
    _last_loud_sample: int | None = None
    _last_frame_at: float | None = None
    first_heard: asyncio.Event = field(default_factory=asyncio.Event)


def _mono_s16(frame: av.AudioFrame) -> np.ndarray:
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar or channels == 1:
        return arr[0].astype(np.int16, copy=False)
    return arr.reshape(-1, channels)[:, 0].astype(np.int16, copy=False)


class ReplyRecorder:
    """Reads the agent's track; timestamps each frame on arrival and finds reply onsets."""

    def __init__(self) -> None:
        self.capture: ReplyCapture | None = None
        self.frames = 0
        self.samples = 0  # running sample count at 48 kHz, the clock for audio gaps
        self.rate_seen: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.create_task(self._run(track))

    def arm(self, at: float) -> ReplyCapture:
        self.capture = ReplyCapture(armed_at=at)
        return self.capture

    async def _run(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                self._on_frame(frame, time.monotonic())

    def _on_frame(self, frame: av.AudioFrame, now: float) -> None:
        pcm = _mono_s16(frame)
        rate = frame.sample_rate or RATE
        self.rate_seen = rate
        start_sample = self.samples
        self.samples += len(pcm)
        self.frames += 1
        cap = self.capture
        if cap is None or now < cap.armed_at:
            return
        if cap.first_audio_at is not None and cap._last_frame_at is not None:
            gap = now - cap._last_frame_at
            cap.max_frame_gap_s = max(cap.max_frame_gap_s, gap)
            if gap > STALL_S:
                cap.stall_spans.append((cap._last_frame_at, now))
        cap._last_frame_at = now
        cap.frames += 1
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)
        if len(loud) == 0:
            return
        first, last = int(loud[0]), int(loud[-1])
        if cap.first_audio_at is None:
            # The sample plays first/rate after the frame's first sample, which plays on arrival.
            cap.first_audio_at = now + first / rate
            cap.first_heard.set()
        elif cap._last_loud_sample is not None:
            silent = start_sample + first - cap._last_loud_sample
            if silent > STALL_S * rate:
                cap.audio_gaps_ms.append(round(silent * 1000 / rate, 1))
        cap._last_loud_sample = start_sample + last
        cap.last_audio_at = now + last / rate

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class TurnResult:
    question: str
    ok: bool
    error: str = ""
    speech_end_at: float = 0.0
    v2v_ms: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    transcript: str = ""
    reply: str = ""
    stall_spans: list[tuple[float, float]] = field(default_factory=list)
    """The frame stalls (see ReplyCapture.stall_spans)."""
    stalls_client_frozen: int = 0
    """Frame stalls that the client's own loop explains: less than 200 ms of the gap is left
    once the time its loop was frozen is taken out (set by the run, which watches the loop)."""
    max_frame_gap_ms: float = 0.0
    audio_gaps_ms: list[float] = field(default_factory=list)
    index: int = 0
    """The turn's place in its session (0: the first, which all sessions speak at once)."""
    round: int = 0
    """The round of the bench (``--rounds``) the turn was spoken in."""


class BenchClient:
    """One session: signaling socket + peer connection + the speech and reply tracks."""

    def __init__(self, base_url: str) -> None:
        self.ws_url = base_url.replace("http://", "ws://") + "/ws/v3"
        audio_level.install()  # the server's cheaper per-frame level: less client CPU under load
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.speech = SpeechTrack()
        self.recorder = ReplyRecorder()
        self.session_id = ""
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.connect_ms: float | None = None  # socket open → connection_established
        self.media_ms: float | None = None  # offer sent → peer connection "connected"
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._answer: asyncio.Future[str] | None = None
        self._metrics: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._transcript = ""
        self._reply = ""
        self.closed_at: float | None = None
        self.answer_ips: list[str] = []  # addresses in the server's ICE candidates

    async def connect(self, timeout_s: float = 15.0) -> None:
        import websockets

        t0 = time.monotonic()
        self._ws = await within(websockets.connect(self.ws_url, max_size=2**22), timeout_s)
        first = json.loads(await within(self._ws.recv(), timeout_s))
        if first.get("type") == "error" and first.get("code") in BUSY_CODES:
            raise SessionRefused(first, (time.monotonic() - t0) * 1000)
        if first.get("type") != "connection_established":
            raise RuntimeError(f"server refused the session: {first}")
        self.connect_ms = (time.monotonic() - t0) * 1000
        self.session_id = first.get("session_id", "")
        self._answer = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

        connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def _on_state() -> None:
            if self.pc.connectionState == "connected":
                connected.set()

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self.recorder.start(track)

        self.pc.addTransceiver(self.speech, direction="sendrecv")
        t1 = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers candidates
        await self.send({"type": "offer", "sdp": self.pc.localDescription.sdp})
        answer = await within(self._answer, timeout_s)
        self.answer_ips = sorted(set(re.findall(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) ", answer)))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await within(connected.wait(), timeout_s)
        self.media_ms = (time.monotonic() - t1) * 1000

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    continue
                msg = json.loads(raw)
                msg["_at"] = time.monotonic()
                self.events.append(msg)
                kind = msg.get("type")
                if kind == "answer" and self._answer is not None and not self._answer.done():
                    self._answer.set_result(msg["sdp"])
                elif kind == "metrics":
                    self._metrics.put_nowait(msg)
                elif kind == "transcript" and msg.get("final"):
                    self._transcript = msg.get("text", "")
                elif kind == "ai_response" and msg.get("final"):
                    self._reply = msg.get("text", "")
                elif kind == "error":
                    self.errors.append(msg)
                    if self._answer is not None and not self._answer.done() and msg.get("fatal"):
                        self._answer.set_exception(RuntimeError(f"server error: {msg}"))
        self.closed_at = time.monotonic()

    async def turn(self, item: SpeechItem, timeout_s: float = 30.0, tail_s: float = 0.3) -> TurnResult:
        """Say one question and wait for the whole spoken reply; never longer than timeout_s."""
        result = TurnResult(question=item.text, ok=False)
        deadline = time.monotonic() + timeout_s
        while not self._metrics.empty():  # stale events of an earlier, failed turn
            self._metrics.get_nowait()
        self._transcript = self._reply = ""
        try:
            result.speech_end_at = await within(self.speech.say(item), timeout_s)
            cap = self.recorder.arm(result.speech_end_at)
            left = deadline - time.monotonic()
            await within(cap.first_heard.wait(), max(0.1, left))
            assert cap.first_audio_at is not None
            result.v2v_ms = round((cap.first_audio_at - result.speech_end_at) * 1000, 1)
            result.metrics = await within(self._metrics.get(),
                                                    max(0.1, deadline - time.monotonic()))
            # The server sends metrics once its last frame went out: let the tail arrive.
            await asyncio.sleep(tail_s)
            result.ok = True
        except TimeoutError:
            result.error = "timeout"
            # Stop the late reply so it cannot overlap the next question (a barge-in), and eat
            # its metrics event so the next turn does not take it for its own.
            with contextlib.suppress(Exception):
                await self.send({"type": "interrupt"})
                await within(self._metrics.get(), 5.0)
        except Exception as exc:  # a broken session fails its turn, not the benchmark
            result.error = f"{type(exc).__name__}: {exc}"
        cap_now = self.recorder.capture
        if cap_now is not None:
            result.stall_spans = list(cap_now.stall_spans)
            result.max_frame_gap_ms = round(cap_now.max_frame_gap_s * 1000, 1)
            result.audio_gaps_ms = list(cap_now.audio_gaps_ms)
        self.recorder.capture = None
        result.transcript, result.reply = self._transcript, self._reply
        return result

    async def end(self, timeout_s: float = 10.0) -> float | None:
        """Send "end"; return ms until the server closed the socket (None if it did not)."""
        t0 = time.monotonic()
        with contextlib.suppress(Exception):
            await self.send({"type": "end"})
            if self._reader is not None:
                await within(asyncio.shield(self._reader), timeout_s)
        return (self.closed_at - t0) * 1000 if self.closed_at is not None else None

    async def close(self) -> None:
        await self.recorder.stop()
        with contextlib.suppress(Exception):
            await within(self.pc.close(), 5)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await within(self._ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
