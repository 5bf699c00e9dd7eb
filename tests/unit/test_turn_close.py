"""Closing a session in every state of a turn, on fake providers (issue #12).

close() must return promptly whatever the providers do, record a reply the user was hearing
as interrupted where they stopped hearing it, and leave nothing running that could still
speak, show or answer."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.helpers.fakes import speech
from tests.helpers.turn_suite import EIGHT, Turns
from voice_agent.core.events import ResponseEvent
from voice_agent.pipeline.turn import TurnState

PROMPT_S = 1.5
"""close() returns within this, even with a provider that ignores its cancellation."""


async def close(h: Turns) -> float:
    """Close the session; return how long it took."""
    start = time.monotonic()
    await h.pipeline.close()
    return time.monotonic() - start


async def nothing_more_happens(h: Turns) -> None:
    """After close: the microphone, the providers and the client are ignored."""
    before = list(h.events)
    h.llm.release.set()
    await h.say("are you there")
    await h.pipeline.push_text("hello?")
    await h.settle()
    h.sink.play_out()
    assert h.events == before
    assert h.state is TurnState.CLOSED


async def test_close_while_listening() -> None:
    async with Turns() as h:
        assert await close(h) < PROMPT_S
        await nothing_more_happens(h)
        assert h.llm.calls == [] and h.history() == []


async def test_close_while_the_user_speaks() -> None:
    async with Turns() as h:
        await h.say("what time", end=False)
        assert await close(h) < PROMPT_S
        await nothing_more_happens(h)
        assert h.finals() == [] and h.llm.calls == [] and h.history() == []


async def test_close_while_a_held_reply_waits_in_the_pause() -> None:
    async with Turns() as h:
        await h.say("what time is it", end=False)
        await h.pause(250)
        await h.until_held()
        assert await close(h) < PROMPT_S
        await nothing_more_happens(h)
        assert h.replies() == [] and h.history() == []
        assert h.ear.total_s() == 0


async def test_close_while_the_final_transcript_is_made() -> None:
    async with Turns() as h:
        h.stt.hold = asyncio.Event()
        await h.say("what time is it")
        await h.settle()
        assert h.state is TurnState.TRANSCRIBING
        assert await close(h) < PROMPT_S
        h.stt.hold.set()
        await nothing_more_happens(h)
        assert h.finals() == [] and h.llm.calls == []


async def test_close_while_replying_before_any_audio() -> None:
    async with Turns() as h:
        h.script(EIGHT, hold_after=0)
        await h.say("count to eight")
        await h.until(lambda: h.llm.active, "the LLM call")
        assert await close(h) < PROMPT_S
        assert h.llm.active == 0  # the LLM call was stopped
        assert h.replies() == [ResponseEvent("", final=True, interrupted=True, spoken_text="")]
        assert h.history() == [("user", "count to eight")]
        await nothing_more_happens(h)
        assert h.ear.total_s() == 0


async def test_close_during_playback_records_the_reply_as_heard_so_far() -> None:
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("count to eight")
        await h.until_written(EIGHT)
        h.sink.advance(0.36)
        assert await close(h) < PROMPT_S
        # Told before close() returned: the client may be gone right after.
        assert h.replies() == [ResponseEvent(EIGHT, final=True, interrupted=True,
                                             spoken_text="one two three")]
        assert h.history() == [("user", "count to eight"), ("assistant", "one two three")]
        assert h.sink.queued_s() == 0
        await nothing_more_happens(h)


async def test_close_twice_is_harmless() -> None:
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("count to eight")
        await h.until_written(EIGHT)
        await close(h)
        events = list(h.events)
        assert await close(h) < 0.01
        assert h.events == events


async def test_close_while_a_reply_ignores_its_cancellation_logs_it_and_returns(
        caplog: pytest.LogCaptureFixture) -> None:
    async with Turns() as h:
        h.script(EIGHT, hold_after=4, ignore_cancel=True)
        await h.say("count to eight")
        await h.until(lambda: h.sink.queued_s() > 0, "the first piece")
        h.sink.advance(0.2)
        with caplog.at_level(logging.ERROR, logger="voice_agent.core.tasks"):
            took = await close(h)
        assert took < PROMPT_S
        stuck = [r for r in caplog.records if r.name == "voice_agent.core.tasks"]
        assert stuck and "did not stop" in stuck[0].getMessage()
        message = stuck[0].getMessage()
        # Where it really waits, down the chain of awaits: the reply, then its LLM task.
        assert "in _reply" in message and "awaiting task reply-think" in message
        assert "in _think" in message  # the LLM stream it reads (async generators end the chain)
        assert len(stuck) == 1  # logged once, not again by close's sweep of the tasks
        assert h.cut()[0].spoken_text == "one two"
        h.llm.release.set()  # the stuck reply goes on, into a closed session
        await h.until(lambda: h.llm.active == 0, "the stuck reply's end")
        await nothing_more_happens(h)
        assert len(h.replies()) == 1


async def test_audio_pushed_after_close_is_ignored() -> None:
    async with Turns() as h:
        await close(h)
        await h.push(speech("what time is it"))
        await h.settle()
        assert h.stt.calls == [] and h.events[-1:] == h.events[:1]
