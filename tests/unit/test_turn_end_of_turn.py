"""How long a pause ends the turn depends on the words so far (issue #14).

A fixed 500 ms of silence answered "What is the largest city in ... Canada?" after its first
half. At each pause the LLM scores the transcript: a complete question ends after 250 ms of
silence, half of one waits up to 2 s, no verdict keeps the 500 ms (1.2 s after a full stop).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.turn_suite import Turns, answer
from tests.helpers.turns import config
from voice_agent.pipeline.end_of_turn import asks_after_lead_in, looks_finished
from voice_agent.pipeline.turn import TurnState


def complete(text: str) -> float:
    return 0.01 if text.endswith((" in", " the", " of")) else 0.9


async def test_a_complete_question_ends_after_a_short_silence() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = complete
        await h.say("what time is it", end=False)
        await h.quiet(350)  # less than the fixed 500 ms
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert h.llm.scored == ["what time is it"]
        assert h.metrics()[0]["end_of_turn_delay_ms"] is not None


@pytest.mark.parametrize(("statements", "asked_with"), [(True, 0.5), (False, None)])
async def test_a_statements_score_is_asked_to_weigh_whether_the_message_ends_after_it(
        statements: bool, asked_with: float | None) -> None:
    """stt.end_of_turn_statements: the scorer gets the bar of a whole turn, so that a lead-in
    ("My sister is learning to play the piano.") is not taken for one (the real model's side:
    tests/integration/test_end_of_turn_models.py)."""
    async with Turns(config(end_of_turn_statements=statements)) as h:
        h.llm.end_of_turn = complete
        await h.say("what time is it", end=False)
        await h.quiet(350)
        await h.answered()
        assert h.llm.statement_checks == [asked_with]


async def test_half_a_question_waits_for_the_rest() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = complete
        await h.say("what is the largest city in", end=False)
        await h.quiet(1200)  # a long pause inside the question: no answer to its first half
        await h.settle()
        assert h.state is TurnState.USER_PAUSED and h.replies() == [] and h.finals() == []
        assert h.llm.calls == []  # not even a reply prepared
        await h.say("canada")
        await h.answered()
        assert h.finals() == ["what is the largest city in canada"]
        assert h.answers() == [answer("what is the largest city in canada")]


async def test_half_a_question_still_ends_after_the_long_wait() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = complete
        await h.say("tell me about the", end=False)
        await h.quiet(2200)  # the user never said more
        await h.answered()
        assert h.finals() == ["tell me about the"]


async def test_without_a_verdict_the_fixed_silence_ends_the_turn() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = lambda _text: None  # a provider that cannot score
        h.llm.scores_turns = False
        await h.say("what time is it", end=False)
        await h.quiet(350)
        assert h.replies() == []  # 350 ms is not the fixed 500 ms
        await h.quiet(300)
        await h.answered()
        assert h.answers() == [answer("what time is it")]


async def test_without_a_verdict_a_full_stop_waits_as_for_a_score_on_its_way() -> None:
    """A score that gave way (another session's reply waited for its first token) after a
    statement: it may be a question's lead-in, so the pause is held as long as for a score on
    its way, and the question said after a 700 ms pause joins the turn."""
    async with Turns() as h:
        h.llm.end_of_turn = lambda _text: None
        await h.say("my sister is learning to play the piano.", end=False)
        await h.quiet(700)  # past the fixed 500 ms
        await h.settle()
        assert h.replies() == [] and h.finals() == []
        await h.say("how many keys does a piano have?")
        await h.answered()
        assert h.finals() == ["my sister is learning to play the piano. how many keys does a "
                              "piano have?"]


async def test_without_a_verdict_a_statement_alone_is_answered_after_the_verdict_wait() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = lambda _text: None
        await h.say("my sister plays the piano.", end=False)
        await h.quiet(1000)
        await h.settle()
        assert h.state is TurnState.USER_PAUSED and h.finals() == []
        await h.quiet(400)  # past end_of_turn.verdict_wait_ms (1.2 s)
        await h.answered()
        assert h.answers() == [answer("my sister plays the piano.")]


async def test_without_a_verdict_cut_off_words_wait_and_the_rest_joins_the_turn() -> None:
    """Four clients at once: the score of "what is the largest city in" gave way to another
    session's reply, the fixed 500 ms ended the turn, and the first half was answered."""
    async with Turns() as h:
        h.llm.end_of_turn = lambda _text: None
        await h.say("what is the largest city in", end=False)
        await h.quiet(900)  # past the fixed 500 ms
        await h.settle()
        assert h.replies() == [] and h.finals() == []
        await h.say("canada?")
        await h.answered()
        assert h.finals() == ["what is the largest city in canada?"]


async def test_without_a_verdict_words_that_look_whole_keep_the_fixed_silence() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = lambda _text: None
        await h.say("name a primary color.", end=False)
        await h.quiet(640)
        await h.answered()
        assert h.answers() == [answer("name a primary color.")]


async def test_a_provider_that_cannot_score_keeps_the_fixed_silence_after_a_full_stop() -> None:
    """Groq or OpenAI answer no score at all: their None is no busy model, and a statement
    ends the turn after the fixed 500 ms as before."""
    async with Turns() as h:
        h.llm.end_of_turn = lambda _text: None
        h.llm.scores_turns = False
        await h.say("name a primary color.", end=False)
        await h.quiet(640)
        await h.answered()
        assert h.answers() == [answer("name a primary color.")]


@pytest.mark.parametrize(("others", "said"), [(False, "what is the largest city in"),
                                               (True, "what is the largest city in?")])
async def test_a_late_transcript_of_half_a_question_waits_for_its_score(others: bool,
                                                                        said: str) -> None:
    """Four sessions at once: Whisper took 0.6-1.6 s for a pause's transcript, and the fixed
    500 ms ended most turns before their words were scored. Half a question must still wait,
    alone or beside another session in a turn (there as Whisper writes it, "?" and all)."""
    async with Turns() as h:
        h.llm.end_of_turn = lambda text: complete(text.rstrip("?"))  # as the model: no "?"
        h.services.activity.set_busy("another session", others)
        await h.say(said, end=False)
        h.stt.hold = asyncio.Event()  # the pause's transcript waits behind other sessions'
        await h.quiet(900)
        await h.settle()
        assert h.state is TurnState.USER_PAUSED and h.finals() == []
        h.stt.hold.set()
        await h.quiet(300)  # scored: half a question, the long wait
        await h.settle()
        assert h.finals() == [] and h.llm.scored[-1] == said
        await h.say("canada")
        await h.answered()
        assert h.finals() == [f"{said} canada"]
        h.services.activity.set_busy("another session", False)


async def test_beside_another_session_a_late_whole_question_ends_without_a_score() -> None:
    """pipeline.pause_unscored_at_sessions (2): with others in a turn, waiting for the score
    cost the four-session tail too much; a question that looks whole ends the turn when its
    transcript comes, unscored, as the fixed silence did before."""
    async with Turns() as h:
        h.llm.end_of_turn = complete
        h.services.activity.set_busy("another session", True)
        await h.say("what time is it?", end=False)
        h.stt.hold = asyncio.Event()
        await h.quiet(640)  # past the fixed 500 ms: the turn waits for the words
        await h.settle()
        assert h.state is TurnState.USER_PAUSED
        h.stt.hold.set()
        await h.quiet(64)
        await h.answered()
        assert h.answers() == [answer("what time is it?")]
        assert "what time is it?" not in h.llm.scored
        h.services.activity.set_busy("another session", False)


@pytest.mark.parametrize(("text", "whole"), [
    ("What is the capital of France?", True), ("Stop!", True), ("Can you tell me?", True),
    ("What is the largest city in?", False), ("How far away is the...", False),
    ("How many legs does a spider-", False), ("what is the largest city in", False),
    ("My sister is learning to play the piano.", False), ("", False),
    # Whisper closes some questions and requests with a full stop: the opening says which
    ("which planet is closest to the Sun.", True), ("Name a primary color.", True),
    ("My sister plays the piano. How many keys does it have.", True),
    ("I left my tea on the table and now it is cold.", False),
    ("What is the largest city in.", False), ("What is the...", False), ("So what.", False),
    # ending on its verb: mostly the first half of a question
    ("Which planet is?", False), ("How many legs does?", False), ("What time is it?", True),
    ("What do you do?", True)])
def test_what_looks_like_a_whole_question_by_its_text(text: str, whole: bool) -> None:
    assert looks_finished(text) is whole


async def test_a_late_transcript_of_a_whole_question_ends_the_turn_once_scored() -> None:
    async with Turns() as h:
        h.llm.end_of_turn = complete
        await h.say("what time is it", end=False)
        h.stt.hold = asyncio.Event()
        await h.quiet(700)
        await h.settle()
        assert h.finals() == []
        h.stt.hold.set()
        await h.quiet(64)  # scored complete: the silence so far is more than enough
        await h.answered()
        assert h.answers() == [answer("what time is it")]
        assert h.metrics()[0]["end_of_turn_delay_ms"] < 1000  # not the whole verdict wait


async def test_words_the_model_is_unsure_of_outlast_a_long_pause() -> None:
    # "What is 7 times" scored between the bands (0.1 <= p < 0.5): a 1.5 s pause inside the
    # question must not get its first half answered (bench pauses answered it at 1000 ms).
    async with Turns() as h:
        h.llm.end_of_turn = lambda text: 0.3 if text.endswith("times") else 0.9
        await h.say("what is 7 times", end=False)
        await h.quiet(1500)
        await h.settle()
        assert h.replies() == [] and h.finals() == []
        await h.say("8")
        await h.answered()
        assert h.finals() == ["what is 7 times 8"]


async def test_another_hearing_that_is_a_whole_question_ends_an_unsure_wait() -> None:
    # "What do bees make?" heard "What do these make?" scored unsure (the long wait); the
    # beam's other hearing scores complete: the turn ends after the short silence.
    async with Turns() as h:
        h.llm.end_of_turn = lambda text: 0.9 if "bees" in text else 0.24
        h.stt.hearings["what do these make"] = ("what do we make", "what do bees make")
        await h.say("what do these make", end=False)
        await h.quiet(500)  # far less than the unsure wait (1.7 s)
        assert h.finals() == ["what do these make"]  # the best hearing is the turn
        await h.answered()
        assert h.metrics()[0]["end_of_turn_delay_ms"] <= 500
        assert h.llm.scored[-2:] == ["what do we make", "what do bees make"]


async def test_other_hearings_that_are_unsure_too_keep_the_long_wait() -> None:
    # "What is 7 times" heard with no whole question among the other hearings: the 1.5 s pause
    # inside the question still gets no answer to its first half.
    async with Turns() as h:
        h.llm.end_of_turn = lambda text: 0.3 if text.endswith(("times", "time")) else 0.9
        h.stt.hearings["what is 7 times"] = ("what is seven time",)
        await h.say("what is 7 times", end=False)
        await h.quiet(1500)
        await h.settle()
        assert h.replies() == [] and h.finals() == []
        assert "what is seven time" in h.llm.scored
        await h.say("8")
        await h.answered()
        assert h.finals() == ["what is 7 times 8"]


async def test_a_statement_before_a_question_is_not_cut_by_a_middling_other_hearing() -> None:
    # "My friend is baking a cake this afternoon." scores unsure (0.47-0.49), and its other
    # hearings score near it: the long wait holds and the question that follows joins the turn.
    async with Turns() as h:
        h.stt.hearings["my friend is making a cake"] = ("my friend is baking a cake",)
        h.llm.end_of_turn = (lambda text: 0.9 if text.endswith("dozen")
                             else 0.55 if "baking" in text else 0.48)
        await h.say("my friend is making a cake", end=False)
        await h.quiet(600)  # the pause between the two sentences
        await h.settle()
        assert h.replies() == [] and h.finals() == []
        assert "my friend is baking a cake" in h.llm.scored
        await h.say("how many eggs are in a dozen")
        await h.answered()
        assert h.finals() == ["my friend is making a cake how many eggs are in a dozen"]


LEAD_IN = "I am planning a picnic this weekend. What are three simple foods that are easy to carry?"


async def test_an_unsure_question_after_a_lead_in_ends_after_the_plain_silence() -> None:
    # The model scores such two-sentence questions low (the picnic one 0.25): they waited the
    # unsure 1.7 s, the one-session p95 of bench latency.
    async with Turns() as h:
        h.llm.end_of_turn = lambda text: 0.25
        h.stt.hearings[LEAD_IN] = (LEAD_IN.replace("three", "free"),)
        await h.say(LEAD_IN, end=False)
        await h.quiet(700)  # past the plain 500 ms, far short of the unsure wait
        await h.answered()
        assert h.finals() == [LEAD_IN]
        assert h.metrics()[0]["end_of_turn_delay_ms"] < 1000
        # its reply starts at once: not after the other hearings' scores, as an unsure
        # question's does (the slot would be theirs first)
        assert h.llm.scored == [LEAD_IN]


async def test_a_question_after_a_lead_in_waits_the_configured_plain_silence() -> None:
    async with Turns(config(end_of_turn_silence_ms=1000)) as h:
        h.llm.end_of_turn = lambda text: 0.25
        await h.say(LEAD_IN, end=False)
        await h.quiet(700)
        await h.settle()
        assert h.replies() == []
        await h.quiet(500)
        await h.answered()
        assert h.finals() == [LEAD_IN]


@pytest.mark.parametrize("said", [
    "I am planning a picnic this weekend. What are three simple foods that are easy to?",
    "What are three simple foods that are easy to carry?",
    "I am planning a picnic this weekend.",
])
async def test_unsure_words_without_a_whole_question_after_a_lead_in_keep_the_long_wait(
        said: str) -> None:
    async with Turns() as h:
        h.llm.end_of_turn = lambda text: 0.25
        await h.say(said, end=False)
        await h.quiet(1500)
        await h.settle()
        assert h.replies() == [] and h.finals() == []


@pytest.mark.parametrize(("text", "asks"), [
    (LEAD_IN, True),
    ("My tea is cold. Why?", True),
    ("My tea is cold! Why does it cool down?\"", True),
    ("What are three simple foods that are easy to carry?", False),  # no lead-in
    ("I am planning a picnic. What are three simple foods that are easy to?", False),
    ("I am planning a picnic. Which planet is?", False),
    ("I am planning a picnic. Tell me three foods.", False),  # not closed by a question mark
    ("I am planning a picnic this weekend.", False),
])
def test_what_asks_a_question_after_a_lead_in(text: str, asks: bool) -> None:
    assert asks_after_lead_in(text) is asks
