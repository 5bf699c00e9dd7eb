"""Model work runs below the event loop's priority, so the loop keeps its audio on time (Linux)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from voice_agent.services.base import ChatMessage
from voice_agent.services.factory import Services
from tests.helpers.speech import speech_16k

pytestmark = [pytest.mark.models,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")]


def threads() -> dict[int, tuple[int, int]]:
    """Each thread of this process: native id → (nice, CPU ticks used so far)."""
    out: dict[int, tuple[int, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the thread's name
        except OSError:  # it ended meanwhile
            continue
        out[int(tid)] = (int(fields[16]), int(fields[11]) + int(fields[12]))
    return out


async def test_every_thread_that_did_model_work_runs_nicer_than_the_event_loop(
        services: Services) -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    main = threading.main_thread().native_id
    before = threads()
    # A reply, a transcript and a sentence of speech: each model's own thread pools at work.
    messages = [ChatMessage("user", "Count from one to ten.")]
    assert "".join([t async for t in services.llm.stream(messages, max_tokens=24)])
    assert (await services.stt.transcribe(speech_16k("The quick brown fox jumps."))).text
    assert [c async for c in services.tts.synthesize("Hello there, this is a test.")]
    after = threads()
    busy = {tid: nice for tid, (nice, ticks) in after.items()
            if tid != main and ticks - before.get(tid, (0, 0))[1] >= 3}  # >= 30 ms of CPU
    assert busy, after  # the models did run in threads of their own
    assert services.nice == 5  # the default, ``server.model_threads_nice``
    assert after[main][0] == base  # the event loop keeps its priority
    names = {tid: open(f"/proc/self/task/{tid}/comm").read().strip() for tid in busy}
    assert all(nice >= base + services.nice for nice in busy.values()), (base, busy, names, main)


async def test_the_llm_threads_can_run_nicer_than_the_other_models() -> None:
    """server.llm_threads_nice: llama.cpp's threads (made when it loads) run below Whisper's
    and Piper's, which a user waits for in short calls; the event loop keeps its priority."""
    from voice_agent.core.config import load_config
    from voice_agent.services.llm_llamacpp import LlamaCppLLM

    config = load_config()
    config = config.model_copy(update={"server": config.server.model_copy(
        update={"llm_threads_nice": 9})})
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    llm = LlamaCppLLM(config)
    before = threads()
    llm.load()  # from this (the test's) thread, at the loop's priority
    try:
        messages = [ChatMessage("user", "Count from one to ten.")]
        assert "".join([t async for t in llm.stream(messages, max_tokens=24)])
        after = threads()
    finally:
        llm.close()
    main = threading.main_thread().native_id
    worked = {tid: nice for tid, (nice, ticks) in after.items()
              if tid not in before and tid != main and ticks >= 3}
    assert worked, after  # llama.cpp's own threads did the work
    assert all(nice == min(19, base + 9) for nice in worked.values()), (base, worked)
    assert os.getpriority(os.PRIO_PROCESS, main) == base
