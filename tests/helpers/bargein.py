"""Helpers for the barge-in and session life-cycle tests (issue #12).

- :class:`SentFrames`: notes when each frame the client's microphone sent was loud, so a test
  can tell on the client's own clock when the interrupting speech began;
- :func:`loud_times` / :func:`last_loud` / :func:`speaking_for`: when the agent was audible at
  the client, from a :class:`~tests.helpers.rtc.TrackRecorder`;
- :func:`transcript_records`: a session's transcript, read back from the server's HTTP API.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
import numpy as np

from tests.helpers.rtc import PcmPlayerTrack, TrackRecorder, rms

AGENT_LOUD_RMS = 0.01
"""A received 20 ms frame above this RMS is the agent audibly speaking (its silence decodes to
~0; Piper's voice is mostly 0.03-0.2)."""
USER_LOUD_RMS = 0.02
"""A sent 20 ms frame above this RMS is the user's speech (espeak-ng speaks at ~0.1-0.3)."""
VOICE_SPEED = 0.8
"""The agent speaks a little slower than its default here. The bug needs the reply's speaker to
have its next audio ready while the sink is full, i.e. the LLM writing faster than the voice
speaks, as on any machine with cores to spare; on the 2-core CI machine the 1-thread LLM only
just keeps up with the voice at speed 1.0, and not at all while the VM's CPU is being stolen:
in one such run the speaker was seen waiting for room in 1 try of 10, and a test that never
gets there cannot catch the hang."""
STORYTELLER_PROMPT = (
    "You are a friendly voice assistant. Your words are spoken aloud. Whenever you are asked "
    "for a story, tell a long one, of at least ten sentences, even if you told stories before. "
    "Other questions you answer in one sentence. No lists, markdown, code or emojis."
)
"""A system prompt for servers whose replies must run long: the default one asks for at most
two short sentences, and with a few turns in the history the 1.5B model keeps to that even when
asked for a long story."""


class SentFrames:
    """Notes ``(time.monotonic(), rms)`` of every frame a :class:`PcmPlayerTrack` hands to
    aiortc's sender (which encodes and sends a frame as soon as ``recv`` returns it): when the
    client's speech began, on the client's own clock. Wraps the track's ``recv`` in place, so
    the track made by ``negotiate`` is used as it is."""

    def __init__(self, track: PcmPlayerTrack) -> None:
        self.sent: list[tuple[float, float]] = []
        inner = track.recv

        async def recv() -> av.AudioFrame:
            frame = await inner()
            self.sent.append((time.monotonic(), rms(frame.to_ndarray().reshape(-1))))
            return frame

        track.recv = recv  # type: ignore[method-assign]

    def first_loud_since(self, since: float, threshold: float = USER_LOUD_RMS) -> float | None:
        """When the first loud frame after ``since`` was sent."""
        return next((t for t, level in list(self.sent) if t >= since and level > threshold),
                    None)


def loud_times(rec: TrackRecorder, since: float, until: float = float("inf"),
               threshold: float = AGENT_LOUD_RMS) -> list[float]:
    """Arrival times of the received frames in [since, until) louder than ``threshold``."""
    return [t for t, pcm in list(rec.frames) if since <= t < until and rms(pcm) > threshold]


def last_loud(rec: TrackRecorder, since: float, until: float = float("inf"),
              threshold: float = AGENT_LOUD_RMS) -> float | None:
    times = loud_times(rec, since, until, threshold)
    return times[-1] if times else None


def speaking_for(rec: TrackRecorder, since: float) -> float:
    """Seconds from the first loud frame after ``since`` to now, if the agent is audible now
    (a loud frame in the last 200 ms); 0 otherwise."""
    times = loud_times(rec, since)
    now = time.monotonic()
    if not times or now - times[-1] > 0.2:
        return 0.0
    return now - times[0]


def speech_span_s(pcm: np.ndarray, rate: int, threshold: float = USER_LOUD_RMS) -> float:
    """Seconds from the first to the last loud 20 ms window of ``pcm``."""
    win = rate // 50
    n = len(pcm) // win
    levels = np.sqrt(((pcm[:n * win].astype(np.float32) / 32768) ** 2).reshape(n, win).mean(1))
    loud = np.flatnonzero(levels > threshold)
    return float((loud[-1] - loud[0] + 1) * win / rate) if len(loud) else 0.0


async def transcript_records(http_base: str, session_id: str) -> list[dict[str, Any]]:
    """The session's records from ``GET /v3/sessions/{id}/transcript``."""
    import httpx

    async with httpx.AsyncClient(base_url=http_base, timeout=5) as http:
        response = await http.get(f"/v3/sessions/{session_id}/transcript")
        response.raise_for_status()
        return list(response.json()["records"])


async def session_ids(http_base: str) -> list[str]:
    """Ids in ``GET /v3/sessions``."""
    import httpx

    async with httpx.AsyncClient(base_url=http_base, timeout=5) as http:
        response = await http.get("/v3/sessions")
        response.raise_for_status()
        return [s["session_id"] for s in response.json()]


async def outbound_queued_s(http_base: str, session_id: str) -> float | None:
    """Seconds of the agent's voice the server holds for sending to this session (the
    ``outbound_queued_s`` of ``GET /v3/webrtc/stats``, there for every transport)."""
    import httpx

    async with httpx.AsyncClient(base_url=http_base, timeout=5) as http:
        response = await http.get("/v3/webrtc/stats")
        response.raise_for_status()
        stats = response.json()["sessions"].get(session_id)
    return None if stats is None else stats.get("outbound_queued_s")


async def wait_speaker_blocked(http_base: str, session_id: str, *, above_s: float,
                               timeout_s: float, cap_s: float = 2.0,
                               settle_s: float = 0.9) -> tuple[float, bool]:
    """Wait for the moment a reply's speaker is most likely parked in the sink waiting for
    room: the moment issue #12's cancel got lost.

    The sink takes a new chunk only while it holds at most ``cap_s`` (audio_out.MAX_QUEUED_S),
    so a refill that starts from about ``cap_s`` means the speaker had its next chunk ready and
    was waiting; a refill from lower down means it was starved (the LLM or the TTS behind).
    After such a refill at the cap, and ``settle_s`` for the next chunk to be synthesized, the
    speaker waits again until the queue is back down to ``cap_s``. Returns once that is so and
    more than ``above_s`` is queued (the caller's action lands while it still waits), as
    ``(queued_s, True)``; after ``timeout_s`` without it, ``(queued_s, False)``: the caller
    goes on regardless. Only the public ``outbound_queued_s`` is read, every ~30 ms."""
    deadline = time.monotonic() + timeout_s
    prev: float | None = None
    refilled_at: float | None = None
    at_cap = False
    while True:
        queued = await outbound_queued_s(http_base, session_id) or 0.0
        now = time.monotonic()
        if prev is not None and queued > prev + 0.2:  # a chunk went in
            refilled_at, at_cap = now, abs(prev - cap_s) <= 0.15
        if at_cap and refilled_at is not None and now - refilled_at >= settle_s \
                and queued > above_s:
            return queued, True
        if now > deadline:
            return queued, False
        prev = queued
        await asyncio.sleep(0.03)


def lead_trimmed(pcm: np.ndarray, rate: int, threshold: float = USER_LOUD_RMS) -> np.ndarray:
    """``pcm`` from 20 ms before its first loud 20 ms window: speech that starts at once when it
    is played (the track sends silence after it, so the end of the turn still comes)."""
    win = rate // 50
    n = len(pcm) // win
    levels = np.sqrt(((pcm[:n * win].astype(np.float32) / 32768) ** 2).reshape(n, win).mean(1))
    loud = np.flatnonzero(levels > threshold)
    return pcm[max(0, int(loud[0]) - 1) * win:] if len(loud) else pcm


async def cancel_leftovers(baseline: set[asyncio.Task[Any]], timeout_s: float = 10.0,
                           ) -> list[asyncio.Task[Any]]:
    """Cancel every task made since ``baseline`` that is still running, again and again (a
    task can swallow a cancel: the bug of issue #12 did), for at most ``timeout_s``. Returns the
    tasks that still run. A frozen session left behind by a failed test must not hang the
    test loop's own teardown, which cancels each task once and waits for all of them."""
    current = asyncio.current_task()
    deadline = time.monotonic() + timeout_s
    while True:
        left = [t for t in asyncio.all_tasks()
                if t not in baseline and t is not current and not t.done()]
        if not left or time.monotonic() > deadline:
            return left
        for task in left:
            task.cancel()
        await asyncio.sleep(0.05)


async def stop_contained(running: Any, baseline: set[asyncio.Task[Any]]) -> None:
    """Stop a test server (``tests.integration.conftest.RunningServer``) and whatever its
    sessions left running since ``baseline``, within bounds; fail (at teardown) if either
    would not stop, rather than hang the rest of the suite."""
    problems = []
    try:
        await running.stop()  # uvicorn's shutdown closes every session; 15 s at most
    except (Exception, asyncio.CancelledError) as exc:  # a timeout, or its task cancelled
        problems.append(f"the server did not stop: {exc!r}")
    left = await cancel_leftovers(baseline)
    if left:
        problems.append(f"{len(left)} tasks would not end on cancel: "
                        f"{[t.get_coro() for t in left][:5]}")
    assert not problems, "; ".join(problems)


async def with_voice_of(services: Any, config: Any) -> Any:
    """``services`` (a ``voice_agent.services.factory.Services``) with a TTS of the same
    provider made for ``config`` (its ``voice.speed``), loaded and warmed up; the other models
    are shared."""
    import dataclasses

    tts = type(services.tts)(config)

    def load() -> None:
        tts.load()
        tts.warmup()

    await asyncio.to_thread(load)
    return dataclasses.replace(services, tts=tts)
