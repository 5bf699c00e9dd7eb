"""A provider failing at each stage of a turn, on fake providers (issue #12).

Whatever fails, the user is told (an error event with the provider's code), hears the apology,
and the session goes back to listening and answers the next question. The recovery makes one
attempt per call (tests/helpers/turns.config), so each scripted failure is final."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.turn_suite import EIGHT, Turns, answer
from tests.helpers.turns import config
from voice_agent.core.config import V3Config
from voice_agent.core.events import ResponseEvent
from voice_agent.core.status import ProcessingStatus as S
from voice_agent.pipeline.replies import APOLOGY
from voice_agent.pipeline.turn import TurnState


def quick_timeouts() -> V3Config:
    """Providers time out after 50 ms (ai.timeout_s bounds the LLM, TTS and final STT)."""
    cfg = config()
    return cfg.model_copy(update={"ai": cfg.ai.model_copy(update={"timeout_s": 0.05})})


async def apologised_and_recovered(h: Turns, code: str) -> None:
    """The failed turn was told and apologised for; the next question is answered."""
    await h.until(lambda: APOLOGY in h.tts.spoken, "the apology")
    await h.until(lambda: h.sink.queued_s() > 0, "the apology's audio")
    assert h.errors() == [code]
    h.sink.play_out()
    await h.until(lambda: h.state is TurnState.LISTENING, "listening again")
    assert h.statuses()[-1] is S.LISTENING
    replies = len(h.replies())
    await h.say("are you there")
    await h.answered(replies + 1)
    assert h.replies()[-1] == ResponseEvent(h.answers()[-1], final=True)
    assert h.finals()[-1] == "are you there"


async def test_llm_failing_before_its_first_token_is_apologised_for() -> None:
    async with Turns() as h:
        h.script(EIGHT, fail_after=0)  # the reply prepared in the pause (tried again)...
        h.script(EIGHT, fail_after=0)  # ...and the turn's
        await h.say("count to eight")
        await apologised_and_recovered(h, "provider_error")


async def test_llm_failing_mid_reply_is_apologised_for() -> None:
    async with Turns() as h:
        h.script(EIGHT, fail_after=3)
        h.script(EIGHT, fail_after=3)
        await h.say("count to eight")
        await apologised_and_recovered(h, "provider_error")
        # Its first words were written, but the failed reply is not in the history.
        assert h.history()[:2] == [("user", "count to eight"), ("user", "are you there")]


async def test_tts_failing_is_apologised_for() -> None:
    async with Turns() as h:
        h.tts.fail = [True, True]  # the reply prepared in the pause, then the turn's
        await h.say("count to eight")
        await apologised_and_recovered(h, "provider_error")


async def test_tts_failing_while_the_llm_still_writes_is_apologised_for_at_once() -> None:
    async with Turns() as h:
        h.tts.fail = [True, True]
        h.script(EIGHT, hold_after=4)
        h.script(EIGHT, hold_after=4)  # the LLM would go on writing a reply nobody can hear
        await h.say("count to eight")
        await apologised_and_recovered(h, "provider_error")
        assert h.llm.active == 0  # and it was stopped


async def test_final_transcript_failing_is_apologised_for() -> None:
    async with Turns() as h:
        h.stt.fail = [True, True]  # the interim at the pause, then the final
        await h.say("count to eight")
        await apologised_and_recovered(h, "provider_error")
        # Both decoded for accuracy: the pause's interim (a reply would be made from it) too.
        assert [final for _, final in h.stt.calls][:2] == [True, True]
        assert h.finals()[0] == "are you there"  # the failed turn showed no transcript


async def test_final_transcript_too_slow_times_out_and_is_apologised_for() -> None:
    async with Turns(quick_timeouts()) as h:
        h.stt.fail = [True]  # the interim at the pause fails: the final must transcribe
        await h.say("count to eight", end=False)
        await h.pause(250)
        await h.settle()
        h.stt.hold = asyncio.Event()  # and it never answers
        await h.pause(500)
        await h.until(lambda: h.errors(), "the STT's timeout")
        h.stt.hold.set()
        await apologised_and_recovered(h, "provider_timeout")


async def test_interim_hanging_at_end_of_turn_times_out_and_is_apologised_for() -> None:
    async with Turns(quick_timeouts()) as h:
        h.stt.hold = asyncio.Event()  # the interim at the pause never answers
        await h.say("count to eight")
        await h.until(lambda: h.errors(), "the STT's timeout", timeout=0.5)
        h.stt.hold.set()
        await apologised_and_recovered(h, "provider_timeout")


async def test_interim_failing_is_ignored_and_the_final_answers() -> None:
    async with Turns() as h:
        h.stt.fail = [True]
        await h.say("count to eight")
        await h.answered()
        assert [final for _, final in h.stt.calls] == [True, True]  # the pause's, then the final
        assert h.errors() == [] and APOLOGY not in h.tts.spoken
        assert h.answers() == [answer("count to eight")]


async def test_llm_too_slow_times_out_and_is_apologised_for() -> None:
    async with Turns(quick_timeouts()) as h:
        h.script(EIGHT, hold_after=0)  # no first token, ever
        await h.say("count to eight")
        await apologised_and_recovered(h, "provider_timeout")
        assert h.llm.active == 0  # the slow call was given up, not left running


async def test_held_reply_failing_during_the_pause_is_answered_at_end_of_turn() -> None:
    async with Turns() as h:
        h.script(EIGHT, fail_after=0)
        await h.say("what time is it", end=False)
        await h.pause(250)
        await h.until(lambda: h.llm.calls and h.pipeline.coordinator.reply is None,
                      "the held reply's failure")
        await h.pause(500)
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert h.errors() == [] and APOLOGY not in h.tts.spoken
        assert len(h.llm.calls) == 2


async def test_held_reply_failing_just_as_the_turn_ends_is_answered() -> None:
    """The held reply's task failed, but its end is not handled yet when the turn ends."""
    async with Turns() as h:
        h.script(EIGHT, fail_after=0)
        await h.say("what time is it", end=False)
        await h.pause(250)
        await h.step_until(lambda: h.llm.calls and not h.pipeline._replies._runs, "the held reply's end")
        assert h.pipeline.coordinator.reply is not None  # not told yet
        await h.pause(500)
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert h.errors() == [] and APOLOGY not in h.tts.spoken


async def test_empty_llm_reply_ends_the_turn_cleanly() -> None:
    async with Turns() as h:
        h.script("")
        await h.say("say nothing")
        await h.answered()
        await h.until(lambda: h.state is TurnState.LISTENING, "listening again")
        assert h.replies() == [ResponseEvent("", final=True)]
        assert h.errors() == [] and h.ear.total_s() == 0
        assert h.statuses() == [S.LISTENING, S.PROCESSING, S.LISTENING]
        assert h.history() == [("user", "say nothing")]
        await h.say("say something")
        await h.answered(2)
        assert h.llm.calls[-1][-1].content == "say nothing\nsay something"


async def test_a_turn_stuck_on_a_provider_is_reported_stalled_then_recovers(monkeypatch) -> None:
    import voice_agent.pipeline.watch as watch

    monkeypatch.setattr(watch, "WATCHDOG_S", 0.05)
    async with Turns() as h:
        h.script(EIGHT, hold_after=0)  # the LLM takes its time (well within ai.timeout_s)
        await h.say("count to eight")
        assert not h.pipeline.stalled
        await h.until(lambda: h.pipeline.stalled, "the stall to be seen", timeout=1.0)
        h.llm.release.set()
        await h.answered()
        assert not h.pipeline.stalled  # listening again: waiting for the user is no stall
