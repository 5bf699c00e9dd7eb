"""A reply started before the pause (issue #14, item 5), model-free.

While the user speaks, each interim's words are scored; a complete question gets its reply
started at once, held. The pause's transcript keeps it when it has the same words (its first
audio is ready when the turn ends), and drops it unheard when the user said more or something
else: nothing of an early reply is ever shown or heard unless its words were the turn's.
"""

from __future__ import annotations

import asyncio

from tests.helpers.fakes import silence, speech
from tests.helpers.turn_suite import Turns, answer
from tests.helpers.turns import config
from voice_agent.core.config import V3Config
from voice_agent.core.events import ResponseEvent
from voice_agent.pipeline.turn import TurnState
from voice_agent.pipeline.turn_events import InterimTick


def pipeline(**update: object) -> V3Config:
    base = config()
    return base.model_copy(update={"pipeline": base.pipeline.model_copy(update=update)})


EARLY = pipeline(preemptive_reply=True)


def complete(text: str) -> float:
    return 0.01 if text.endswith((" in", " the", " of", " is")) else 0.9


async def test_a_reply_starts_before_the_pause_and_is_kept() -> None:
    async with Turns(EARLY) as h:
        h.llm.end_of_turn = complete
        await h.push(speech("what time is it"))
        await h.interim()
        assert h.llm.scored == ["what time is it"]
        await h.until_held()  # started while the user still speaks ...
        assert h.state is TurnState.USER_SPEAKING
        assert h.ear.total_s() == 0
        assert h.of(ResponseEvent) == []  # ... and neither shown nor heard
        await h.quiet(350)
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert len(h.llm.calls) == 1  # the early reply is the one heard: no second reply
        assert h.llm.scored == ["what time is it"]  # the pause needed no second score
        metrics = h.metrics()[0]
        assert metrics["preemptive"] is True and metrics["end_of_turn_delay_ms"] is not None


async def test_the_user_says_more_the_early_reply_is_dropped_unheard() -> None:
    async with Turns(EARLY) as h:
        h.llm.end_of_turn = complete
        await h.push(speech("what is the largest city"))
        await h.interim()
        await h.until_held()
        await h.push(speech("in canada"))
        await h.interim()  # new words: the early reply to the first half goes, one to the
        # whole question starts
        await h.quiet(350)
        await h.answered()
        assert h.answers() == [answer("what is the largest city in canada")]
        assert h.finals() == ["what is the largest city in canada"]
        assert all("largest city." not in text for text in h.shown())
        assert h.history() == [("user", "what is the largest city in canada"),
                               ("assistant", answer("what is the largest city in canada"))]
        assert [c[-1].content for c in h.llm.calls] == ["what is the largest city",
                                                        "what is the largest city in canada"]
        assert h.metrics()[0]["preemptive"] is True


async def test_half_a_question_gets_no_early_reply() -> None:
    async with Turns(EARLY) as h:
        h.llm.end_of_turn = complete
        await h.push(speech("what is the capital of"))
        await h.interim()
        assert h.llm.scored == ["what is the capital of"] and h.llm.calls == []
        await h.push(speech("france"))
        await h.quiet(350)
        await h.answered()
        assert h.answers() == [answer("what is the capital of france")]


async def test_words_after_the_last_interim_drop_the_early_reply_at_the_pause() -> None:
    """The interim missed the last words (spoken after it): the pause's transcript has them,
    so the early reply is not the turn's."""
    async with Turns(EARLY) as h:
        h.llm.end_of_turn = complete
        await h.push(speech("tell me a joke"))
        await h.interim()
        await h.until_held()
        await h.push(speech("about cats"))  # no interim while these are said
        await h.quiet(350)
        await h.answered()
        assert h.answers() == [answer("tell me a joke about cats")]
        assert len(h.llm.calls) == 2
        assert h.llm.scored == ["tell me a joke", "tell me a joke about cats"]


async def test_by_default_words_are_scored_early_but_no_reply_starts_before_the_pause() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = complete
        await h.push(speech("what time is it"))
        await h.interim()
        assert h.llm.scored == ["what time is it"] and h.llm.calls == []
        await h.quiet(350)
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert h.llm.scored == ["what time is it"]  # the pause needed no second score
        assert h.metrics()[0]["preemptive"] is False


async def test_without_early_scores_the_words_are_prefilled() -> None:
    async with Turns(pipeline(score_while_speaking=False)) as h:
        h.llm.end_of_turn = complete
        await h.push(speech("what time is it"))
        await h.interim()
        assert h.llm.calls == [] and h.llm.scored == [] and h.llm.prefills
        await h.quiet(350)
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert h.llm.scored == ["what time is it"]  # scored at the pause, as before


async def test_a_barge_in_while_an_early_reply_is_held_is_no_barge_in() -> None:
    """The early reply was never heard: typing over it answers the text, and the history
    holds no trace of the early one."""
    async with Turns(EARLY) as h:
        h.llm.end_of_turn = complete
        await h.push(speech("what time is it"))
        await h.interim()
        await h.until_held()
        await h.pipeline.push_text("never mind, hello")
        await h.answered()
        assert h.answers() == [answer("never mind, hello")]
        assert h.history() == [("user", "never mind, hello"),
                               ("assistant", answer("never mind, hello"))]


async def test_a_pause_during_a_score_waits_for_it_before_its_transcript() -> None:
    """Whisper's beam search beside llama.cpp's prompt read took ~2 s each on 2 cores, one
    after the other ~0.3 s: the pause's transcript is asked for once the score is back."""
    async with Turns() as h:
        h.llm.end_of_turn = complete
        h.llm.score_hold = asyncio.Event()
        await h.push(speech("what time is it"))
        h.pipeline._post(InterimTick())
        await h.until(lambda: h.stt.calls, "the interim")
        await h.settle()
        await h.push(silence(160))  # the pause, while the score is held
        await h.settle()
        assert h.stt.calls == [("what time is it", False)]  # no decisive transcript yet
        h.llm.score_hold.set()
        await h.until(lambda: len(h.stt.calls) == 2, "the pause's transcript")
        assert h.stt.calls[1] == ("what time is it", True)
        await h.quiet(250)
        await h.answered()
        assert h.answers() == [answer("what time is it")]
