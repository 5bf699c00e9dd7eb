"""Barge-in at every point of a reply, on fake providers (issue #12).

After every barge-in the user must hear the old reply stop at once (Turns.barge_in checks that
the sink is empty from the first word on, and that none of the old reply's audio comes after),
and the session must answer what they said next: it is never deaf. Playback only advances when
a test says so, so "heard" is exact."""

from __future__ import annotations

import asyncio

from tests.helpers.turn_suite import EIGHT, LONG_REPLY, Turns, answer, audio_s
from voice_agent.core.events import ResponseEvent
from voice_agent.pipeline.replies import APOLOGY


async def test_barge_in_before_the_first_token_is_answered() -> None:
    async with Turns() as h:
        h.script(EIGHT, hold_after=0)
        await h.say("count to eight")
        await h.until(lambda: h.llm.active, "the LLM call")
        mark = await h.barge_in("stop that")
        await h.answered(2)
        assert h.answers() == [answer("count to eight stop that")]
        assert h.ear.total_s(mark) == audio_s(answer("count to eight stop that"))


async def test_words_of_a_question_cut_before_anything_was_heard_join_the_next_turn() -> None:
    async with Turns() as h:
        h.script(EIGHT, hold_after=0)
        await h.say("what is")
        await h.until(lambda: h.llm.active, "the LLM call")
        await h.barge_in("the time")
        await h.answered(2)
        assert h.llm.calls[-1][-1].content == "what is the time"
        assert h.history() == [("user", "what is the time"),
                               ("assistant", answer("what is the time"))]


async def test_barge_in_while_the_first_piece_is_synthesised_is_answered() -> None:
    async with Turns() as h:
        h.tts.hold = asyncio.Event()
        h.script(EIGHT)
        await h.say("count to eight")
        # Prepared in the pause, its text is shown with its first audio, which the TTS holds.
        await h.until(lambda: (r := h.pipeline.coordinator.reply) is not None
                      and r.state.text.strip() == EIGHT, "the whole reply written")
        mark = await h.barge_in("stop that")
        h.tts.hold.set()
        await h.answered(2)
        assert h.answers() == [answer("count to eight stop that")]
        assert h.ear.total_s(mark) == audio_s(answer("count to eight stop that"))
        # The piece being made when the user spoke was finished (the reply was only paused
        # then), but nothing after it: the words made it a barge-in, and nothing was heard.
        assert not any("four" in piece for piece in h.tts.spoken)


async def test_barge_in_during_playback_keeps_only_what_was_heard() -> None:
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("count to eight")
        await h.until_written(EIGHT)
        h.sink.advance(0.36)  # 'one two three' and a little of 'four five'
        await h.barge_in("stop")  # paused at once; cut once the word is known
        await h.until(lambda: h.replies(), "the cut")
        assert h.replies()[0] == ResponseEvent(EIGHT, final=True, interrupted=True,
                                               spoken_text="one two three")
        assert h.history()[:2] == [("user", "count to eight"), ("assistant", "one two three")]
        assert h.pipeline.conversation.history[1]["interrupted"] is True


async def test_question_after_a_barge_in_during_playback_is_answered() -> None:
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("count to eight")
        await h.until_written(EIGHT)
        h.sink.advance(0.36)
        mark = await h.barge_in("what else")
        await h.answered(2)
        assert h.answers() == [answer("what else")]
        assert h.ear.total_s(mark) == audio_s(answer("what else"))
        assert h.history()[-2:] == [("user", "what else"), ("assistant", answer("what else"))]


async def test_barge_in_after_the_last_token_while_audio_plays() -> None:
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("count to eight")
        await h.until_written(EIGHT)
        assert h.llm.active == 0 and h.sink.queued_s() > 0  # written, still playing
        h.sink.advance(0.66)  # up to 'six' of 'six seven eight'
        mark = await h.barge_in("what else")
        await h.answered(2)
        cut, reply = h.replies()
        assert cut == ResponseEvent(EIGHT, final=True, interrupted=True,
                                    spoken_text="one two three four five six")
        assert reply.text == answer("what else")
        assert h.ear.total_s(mark) == audio_s(answer("what else"))


async def test_barge_in_while_the_sink_is_full_is_answered() -> None:
    """The original deaf-session bug: the reply waits in play() for room when the user speaks."""
    async with Turns() as h:
        h.script(LONG_REPLY)
        await h.say("tell me a story")
        await h.until(lambda: h.sink.queued_s() > h.sink.max_queued_s, "a full sink")
        h.sink.advance(0.22)  # 'w1 w2' of the first piece, 'w1 w2 w3'
        await h.settle()
        assert h.sink.queued_s() > h.sink.max_queued_s  # play() is waiting for room
        assert h.ear.total_s() < audio_s(LONG_REPLY)
        mark = await h.barge_in("stop now")
        await h.answered(2)
        assert h.cut()[0].spoken_text == "w1 w2"
        assert h.answers() == [answer("stop now")]
        assert h.ear.total_s(mark) == audio_s(answer("stop now"))


async def test_barge_in_during_a_held_reply_never_plays_it() -> None:
    async with Turns() as h:
        h.script("an early answer that nobody should ever hear at all")
        await h.say("what is", end=False)
        await h.pause(250)
        await h.until_held()
        await h.barge_in("the time")
        await h.answered()
        await h.settle()
        assert h.answers() == [answer("what is the time")]
        assert h.ear.total_s() == audio_s(answer("what is the time"))


async def test_two_barge_ins_in_a_row_are_each_answered() -> None:
    async with Turns() as h:
        h.script(EIGHT)
        h.script("alpha beta gamma delta epsilon")
        await h.say("count to eight")
        await h.until_written(EIGHT)
        h.sink.advance(0.36)
        await h.barge_in("say greek letters")
        await h.until(lambda: h.cut() and h.sink.queued_s() > 0 and not h.sink.paused,
                      "the second reply's audio")
        h.sink.advance(0.36)  # 'alpha beta gamma'
        mark = await h.barge_in("thank you")
        await h.answered(3)
        assert [r.spoken_text for r in h.cut()] == ["one two three", "alpha beta gamma"]
        assert h.answers() == [answer("thank you")]
        assert h.ear.total_s(mark) == audio_s(answer("thank you"))
        assert h.history() == [
            ("user", "count to eight"), ("assistant", "one two three"),
            ("user", "say greek letters"), ("assistant", "alpha beta gamma"),
            ("user", "thank you"), ("assistant", answer("thank you"))]


async def test_barge_in_during_the_apology_is_answered() -> None:
    async with Turns() as h:
        h.script("never", fail_after=0)  # the reply prepared in the pause (tried again)...
        h.script("never", fail_after=0)  # ...and the turn's
        await h.say("count to eight")
        await h.until(lambda: APOLOGY in h.tts.spoken and h.sink.queued_s() > 0,
                      "the apology")
        h.sink.advance(0.2)
        mark = await h.barge_in("are you there")
        await h.answered()
        assert h.finals() == ["count to eight", "are you there"]
        assert len(h.answers()) == 1 and h.cut() == []
        assert h.llm.calls[-1][-1].content.endswith("are you there")
        assert h.ear.total_s(mark) == audio_s(h.answers()[0])
        assert not any(text == APOLOGY for _, text in h.history())


async def test_speech_while_the_final_transcript_is_made_is_heard_with_the_first_words() -> None:
    async with Turns() as h:
        h.stt.hold = asyncio.Event()
        await h.say("what is")
        await h.settle()
        assert h.finals() == []
        await h.say("the time")
        h.stt.hold.set()
        await h.answered()
        assert h.finals() == ["what is the time"]
        assert h.answers() == [answer("what is the time")]
        assert len(h.llm.calls) == 1


async def test_barge_in_over_a_reply_that_ignores_cancellation() -> None:
    async with Turns() as h:
        h.script(EIGHT, hold_after=4, ignore_cancel=True)  # stuck after 'one two three four'
        await h.say("count to eight")
        await h.until(lambda: h.sink.queued_s() > 0, "the first piece")
        h.sink.advance(0.2)
        mark = await h.barge_in("what else")
        await h.answered(2)
        assert h.answers() == [answer("what else")]
        h.llm.release.set()  # the stuck reply goes on writing, and speaking into nothing
        await h.until(lambda: h.llm.active == 0, "the stuck reply's end")
        await h.settle()
        h.sink.play_out()
        assert h.ear.total_s(mark) == audio_s(answer("what else"))
        assert len(h.replies()) == 2


async def test_speech_just_as_the_reply_ends_keeps_the_reply_heard() -> None:
    """The reply's task is over (all played) but the coordinator has not been told yet when the
    user's speech is confirmed: the user heard it all, so the history keeps it all."""
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("count to eight")
        await h.until_written(EIGHT)
        h.sink.play_out()
        await h.step_until(lambda: h.pipeline._replies.current is None, "the reply task's end")
        assert h.replies() == []  # its end is not handled yet
        await h.barge_in("what else")
        await h.answered(2)
        assert h.replies()[0].spoken_text in (None, EIGHT)
        assert h.history() == [("user", "count to eight"), ("assistant", EIGHT),
                               ("user", "what else"), ("assistant", answer("what else"))]
