"""Turn-taking on fake providers: a question is answered, a pause is handled, the client's
interrupt and typed text (issue #12). Barge-ins, failures and close have files of their own.

Deterministic: the fakes never sleep, the turn detector runs on audio time, and playback only
advances when a test says so (FakeSink.advance / play_out)."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.helpers.fakes import FRAME, silence
from tests.helpers.turn_suite import EIGHT, Turns, answer, audio_s
from voice_agent.core.events import ResponseEvent, TranscriptEvent
from voice_agent.core.status import ProcessingStatus as S
from voice_agent.pipeline.metrics import STAGES
from voice_agent.pipeline.turn import TurnState


def first_index(h: Turns, kind: type, **match: object) -> int:
    return next(i for i, e in enumerate(h.events) if isinstance(e, kind)
                and all(getattr(e, k) == v for k, v in match.items()))


# ── basics ────────────────────────────────────────────────────────────────────────────────


async def test_spoken_question_is_answered_after_its_transcript() -> None:
    async with Turns() as h:
        await h.say("what time is it")
        await h.answered()
        assert h.finals() == ["what time is it"]
        assert h.answers() == [answer("what time is it")]
        assert first_index(h, TranscriptEvent, final=True) < first_index(h, ResponseEvent)
        assert h.history() == [("user", "what time is it"),
                               ("assistant", answer("what time is it"))]


async def test_spoken_question_shows_listening_processing_speaking_listening() -> None:
    async with Turns() as h:
        await h.say("what time is it")
        await h.answered()
        await h.settle()
        assert h.statuses() == [S.LISTENING, S.PROCESSING, S.SPEAKING, S.LISTENING]
        assert h.state is TurnState.LISTENING


async def test_typed_question_is_answered_without_the_stt() -> None:
    async with Turns() as h:
        await h.pipeline.push_text("  what time is it ")
        await h.answered()
        assert h.finals() == ["what time is it"]
        assert h.answers() == [answer("what time is it")]
        assert h.stt.calls == []
        assert h.history() == [("user", "what time is it"),
                               ("assistant", answer("what time is it"))]


async def test_silence_makes_no_turn() -> None:
    async with Turns() as h:
        await h.push(silence(3000))
        await h.settle()
        assert h.statuses() == [S.LISTENING]
        assert h.stt.calls == [] and h.llm.calls == []
        assert h.state is TurnState.LISTENING


async def test_loud_burst_shorter_than_min_speech_makes_no_turn() -> None:
    async with Turns() as h:
        burst_ms = 4 * 32  # 128 ms < stt.min_speech_ms (160 ms)
        assert burst_ms < h.pipeline.config.stt.min_speech_ms
        await h.push(np.full(4 * FRAME, 0.5, np.float32))
        await h.push(silence(1000))
        await h.settle()
        assert h.statuses() == [S.LISTENING]
        assert h.stt.calls == [] and h.llm.calls == []


async def test_speech_the_stt_cannot_make_out_makes_no_turn_and_listens_on() -> None:
    async with Turns() as h:
        await h.push(np.full(20 * FRAME, 0.9, np.float32))  # loud, but no word FakeSTT knows
        await h.push(silence(700))
        await h.quiet_until_the_turn_ends()
        await h.until(lambda: h.statuses()[-1] is S.LISTENING and h.state is TurnState.LISTENING,
                      "back to listening")
        assert h.stt.calls and all(text == "" for text, _ in h.stt.calls)
        assert h.finals() == [] and h.llm.calls == []
        assert h.statuses() == [S.LISTENING, S.PROCESSING, S.LISTENING]
        await h.say("hello there")
        await h.answered()
        assert h.answers() == [answer("hello there")]


async def test_follow_up_question_gets_the_previous_turn_as_context() -> None:
    async with Turns() as h:
        await h.say("who wrote hamlet")
        await h.answered(1)
        await h.say("when was he born")
        await h.answered(2)
        sent = [(m.role, m.content) for m in h.llm.calls[1]]
        assert sent[1:] == [("user", "who wrote hamlet"),
                            ("assistant", answer("who wrote hamlet")),
                            ("user", "when was he born")]


async def test_every_turn_reports_metrics_with_its_number_and_every_stage() -> None:
    async with Turns() as h:
        await h.say("who wrote hamlet")
        await h.answered(1)
        await h.pipeline.push_text("when was he born")
        await h.answered(2)
        await h.say("where did he live")
        await h.answered(3)
        metrics = h.metrics()
        assert [m["turn"] for m in metrics] == [1, 2, 3]
        assert [m["source"] for m in metrics] == ["voice", "text", "voice"]
        voice_stages = STAGES
        text_stages = [s for s in STAGES if s != "speech_end"]  # nobody spoke
        for m, stages in zip(metrics, [voice_stages, text_stages, voice_stages]):
            missing = [s for s in stages if m[f"at_{s}_ms"] is None]
            assert missing == [], f"turn {m['turn']} lacks {missing}"
            assert m["interrupted"] is False


# ── pauses ────────────────────────────────────────────────────────────────────────────────


async def test_reply_prepared_during_a_pause_is_released_at_end_of_turn() -> None:
    async with Turns() as h:
        await h.say("what time is it", end=False)
        await h.pause(250)
        await h.until_held()
        assert h.of(ResponseEvent) == [] and h.finals() == []
        assert h.sink.queued_s() == 0
        await h.pause(500)  # the turn ends
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert first_index(h, TranscriptEvent, final=True) < first_index(h, ResponseEvent)
        # The pause's interim, decoded as accurately as a final (beam), was the final.
        assert [final for _, final in h.stt.calls] == [True]
        metrics = h.metrics()[0]
        assert metrics["transcript_reused"] is True
        assert [s for s in STAGES if metrics[f"at_{s}_ms"] is None] == []
        assert len(h.llm.calls) == 1


async def test_more_speech_after_a_pause_drops_the_held_reply_unheard() -> None:
    async with Turns() as h:
        h.script("an early answer that nobody should ever hear at all")
        await h.say("what is", end=False)
        await h.pause(250)
        await h.until_held()
        await h.say("the time")
        await h.answered()
        await h.settle()
        assert h.replies() == [ResponseEvent(answer("what is the time"), final=True)]
        assert not any("early" in text for text in h.shown())
        assert h.ear.total_s() == audio_s(answer("what is the time"))
        assert [m.content for m in h.llm.calls[-1]][-1] == "what is the time"
        assert h.history() == [("user", "what is the time"),
                               ("assistant", answer("what is the time"))]


async def test_pause_whose_interim_misses_later_speech_is_transcribed_again() -> None:
    async with Turns() as h:
        h.stt.hold = asyncio.Event()
        await h.say("what is", end=False)
        await h.pause(150)
        await h.settle()  # an interim of "what is" is being made...
        await h.say("the time", end=False)  # ...when more speech comes
        await h.pause(250)
        h.stt.hold.set()
        await h.until_held()
        assert [text for text, _ in h.stt.calls] == ["what is", "what is the time"]
        assert [m.content for m in h.llm.calls[0]][-1] == "what is the time"
        await h.pause(500)
        await h.answered()
        assert h.answers() == [answer("what is the time")]
        assert len(h.llm.calls) == 1


# ── the client's interrupt ────────────────────────────────────────────────────────────────


async def speaking_eight(h: Turns) -> None:
    """Ask a question whose reply is EIGHT; return once all of it is queued."""
    h.script(EIGHT)
    await h.say("count to eight")
    await h.until_written(EIGHT)


async def test_interrupt_during_playback_stops_the_reply_where_it_was_heard() -> None:
    async with Turns() as h:
        await speaking_eight(h)
        h.sink.advance(0.36)
        await h.pipeline.interrupt()
        assert h.sink.queued_s() == 0
        assert h.replies() == [ResponseEvent(EIGHT, final=True, interrupted=True,
                                             spoken_text="one two three")]
        assert h.history() == [("user", "count to eight"), ("assistant", "one two three")]
        assert h.pipeline.conversation.history[-1]["interrupted"] is True
        assert h.statuses()[-1] is S.LISTENING and h.state is TurnState.LISTENING


async def test_interrupt_when_idle_changes_nothing() -> None:
    async with Turns() as h:
        await h.pipeline.interrupt()
        await h.settle()
        assert h.statuses() == [S.LISTENING] and len(h.events) == 1
        assert h.state is TurnState.LISTENING


async def test_typed_question_after_an_interrupt_is_answered() -> None:
    async with Turns() as h:
        await speaking_eight(h)
        h.sink.advance(0.36)
        await h.pipeline.interrupt()
        mark = h.ear.mark()
        await h.pipeline.push_text("what else")
        await h.answered(2)
        assert h.answers() == [answer("what else")]
        assert h.ear.total_s(mark) == audio_s(answer("what else"))


# ── typed text ────────────────────────────────────────────────────────────────────────────


async def test_typed_text_during_a_reply_supersedes_it() -> None:
    async with Turns() as h:
        await speaking_eight(h)
        h.sink.advance(0.36)
        mark = h.ear.mark()
        await h.pipeline.push_text("never mind")
        await h.answered(2)
        first, second = h.replies()
        assert first.interrupted and first.spoken_text == "one two three"
        assert second == ResponseEvent(answer("never mind"), final=True)
        assert h.ear.total_s(mark) == audio_s(answer("never mind"))
        assert h.history() == [("user", "count to eight"), ("assistant", "one two three"),
                               ("user", "never mind"), ("assistant", answer("never mind"))]


async def test_typed_text_while_the_user_speaks_is_answered_instead() -> None:
    async with Turns() as h:
        await h.say("what is", end=False)
        await h.pipeline.push_text("hello")
        await h.pause(700)
        await h.answered()
        await h.settle()
        assert h.finals() == ["hello"]
        assert h.answers() == [answer("hello")]
        assert [[m.content for m in call][-1] for call in h.llm.calls] == ["hello"]
        await h.say("and now")  # the microphone still works
        await h.answered(2)
        assert h.answers()[-1] == answer("and now")


async def test_typed_text_while_the_transcript_is_made_is_answered_instead() -> None:
    async with Turns() as h:
        h.stt.hold = asyncio.Event()
        await h.say("what is")
        await h.settle()
        assert h.state is TurnState.TRANSCRIBING
        await h.pipeline.push_text("hello")
        h.stt.hold.set()
        await h.answered()
        await h.settle()
        assert h.finals() == ["hello"]
        assert h.answers() == [answer("hello")]
        assert h.history() == [("user", "hello"), ("assistant", answer("hello"))]


async def test_two_typed_messages_back_to_back_answer_only_the_second() -> None:
    async with Turns() as h:
        await h.pipeline.push_text("first")
        await h.pipeline.push_text("second")
        await h.answered(2)
        await h.settle()
        cut, reply = h.replies()
        assert cut.interrupted and cut.spoken_text == ""
        assert not reply.interrupted
        # The first message was never answered: the LLM reads it with the second.
        assert h.llm.calls[-1][-1].content == "first\nsecond"
        assert h.ear.total_s() == audio_s(reply.text)
        assert h.history() == [("user", "first"), ("user", "second"), ("assistant", reply.text)]
