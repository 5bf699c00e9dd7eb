"""Many sessions at once on one shared model: callers queue in the event loop, not in threads."""

from __future__ import annotations

import asyncio
import time

import pytest

from voice_agent.core.config import load_config
from voice_agent.services.stt_whisper import WhisperSTT
from tests.helpers.speech import speech_16k

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def stt():
    s = WhisperSTT(load_config())
    s.load()
    yield s
    s.close()


async def test_a_burst_of_transcriptions_does_not_starve_other_work(stt):
    audio = speech_16k("What is the capital of France?")
    calls = [asyncio.create_task(stt.transcribe(audio)) for _ in range(12)]
    await asyncio.sleep(0.05)
    assert stt.busy
    # The executor that everything else (file writes, TTS steps) uses still has room.
    t0 = time.monotonic()
    await asyncio.to_thread(lambda: None)
    assert time.monotonic() - t0 < 0.2
    # Waiters given up on (timeouts, barge-ins) leave at once and never run later.
    for c in calls[2:]:
        c.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) >= 9
    assert all("capital" in r.text.lower() for r in results if not isinstance(r, BaseException))
    t0 = time.monotonic()
    while stt.busy:
        await asyncio.sleep(0.01)
    assert time.monotonic() - t0 < 1.0  # no queue of cancelled calls left to drain
