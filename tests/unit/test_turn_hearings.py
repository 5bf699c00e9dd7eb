"""The STT's other hearings of a question reach the LLM beside the transcript (issue #14,
hearing): "What do these make? (or: What do bees make?)" got "Bees make honey." from the 1.5B
model where the best hearing alone got "These make a spider." The user's transcript and the
history show only the best hearing. Fake providers, no models."""

from __future__ import annotations

from tests.helpers.turn_suite import Turns
from tests.helpers.turns import config
from voice_agent.core.conversation import ConversationManager, with_hearings
from voice_agent.services.stt_whisper import distinct_hearings


def last_user(messages) -> str:
    return [m.content for m in messages if m.role == "user"][-1]


async def ask_these(h: Turns, turn: int = 1) -> str:
    """Say the misheard question (its other hearing: bees) and return what the LLM read."""
    await h.say("what do these make")
    await h.answered(turn)
    return last_user(h.llm.calls[-1])


async def test_the_llm_reads_the_other_hearings_the_user_sees_the_best_one() -> None:
    async with Turns() as h:
        h.stt.hearings["what do these make"] = ("what do bees make", "what do we make")
        await h.say("what do these make")
        await h.answered()
        assert last_user(h.llm.calls[-1]) == (
            "what do these make (or: what do bees make / what do we make)")
        assert h.finals() == ["what do these make"]
        assert h.history()[0] == ("user", "what do these make")


async def test_the_next_turn_still_reads_the_first_ones_hearings() -> None:
    async with Turns() as h:
        h.stt.hearings["what do these make"] = ("what do bees make",)
        await h.say("what do these make")
        await h.answered()
        await h.settle()
        await h.say("and ants")
        await h.answered(2)
        users = [m.content for m in h.llm.calls[-1] if m.role == "user"]
        assert users == ["what do these make (or: what do bees make)", "and ants"]


async def test_every_reply_started_reads_the_hearings() -> None:
    async with Turns() as h:
        h.stt.hearings["what do these make"] = ("what do bees make",)
        await h.say("what do these make")
        await h.answered()
        # every call the LLM got saw the hearings: none came from a cheap interim alone
        assert all("(or: what do bees make)" in last_user(c) for c in h.llm.calls)


def test_hearings_that_differ_only_in_case_or_punctuation_are_one() -> None:
    best = "What do these make?"
    others = ["what do these make.", "What do bees make?", "What do bees make", "",
              "What do we make?", "What do he make?"]
    assert distinct_hearings(best, others, 2) == ("What do bees make?", "What do we make?")
    assert distinct_hearings(best, others, 0) == ()


def test_context_and_history_of_a_turn_with_hearings() -> None:
    c = ConversationManager("sys")
    assert with_hearings("hi", ()) == "hi"
    assert with_hearings("  ", ("x",)) == ""
    c.add_user("what is the capital and friends", heard_as=("what is the capital of france",))
    assert c.history[0]["text"] == "what is the capital and friends"
    assert c.context()[-1].content == (
        "what is the capital and friends (or: what is the capital of france)")
    assert c.context("more", heard_as=("mower",))[-1].content.endswith("more (or: mower)")


async def test_with_other_sessions_in_a_turn_the_llm_reads_the_best_hearing_alone() -> None:
    """Light mode (pipeline.light_at_sessions, 2): the hearings' reading would wait on every
    other session's, so a busy server answers from the best hearing."""
    async with Turns() as h:
        h.services.activity.set_busy("another session", True)
        h.stt.hearings["what do these make"] = ("what do bees make",)
        assert await ask_these(h) == "what do these make"
        h.services.activity.set_busy("another session", False)
        await h.settle()
        assert await ask_these(h, 2) == "what do these make (or: what do bees make)"


async def test_the_hearings_stay_until_the_configured_count_of_sessions_in_a_turn() -> None:
    """pipeline.hearings_off_at_sessions apart from light mode: at 3, a second session in a
    turn keeps the hearings (light mode is on: nothing else is read early), a third drops them;
    0 keeps them whatever the load."""

    def cfg(at: int):
        base = config()
        return base.model_copy(update={"pipeline": base.pipeline.model_copy(
            update={"hearings_off_at_sessions": at})})

    async with Turns(cfg(3)) as h:
        h.stt.hearings["what do these make"] = ("what do bees make",)
        h.services.activity.set_busy("second session", True)
        assert await ask_these(h) == "what do these make (or: what do bees make)"
        h.services.activity.set_busy("third session", True)
        await h.settle()
        assert await ask_these(h, 2) == "what do these make"
    async with Turns(cfg(0)) as h:
        h.stt.hearings["what do these make"] = ("what do bees make",)
        for other in ("a", "b", "c", "d", "e"):
            h.services.activity.set_busy(other, True)
        assert await ask_these(h) == "what do these make (or: what do bees make)"


LONG = ("my grandmother has a small garden behind her house where she grows tomatoes beans and "
        "carrots and this summer the leaves turned yellow so what could be wrong with them")


async def test_a_long_question_goes_to_the_llm_without_its_other_hearings() -> None:
    """Each hearing repeats the whole utterance: a 30-word question's two would double and
    triple its prompt (stt.alternatives_max_words, 24)."""
    async with Turns() as h:
        assert len(LONG.split()) > config().stt.alternatives_max_words == 24
        h.stt.hearings[LONG] = (LONG.replace("beans", "jeans"),)
        await h.say(LONG)
        await h.answered()
        assert last_user(h.llm.calls[-1]) == LONG


async def test_no_word_limit_reads_the_hearings_of_a_long_question_too() -> None:
    async with Turns(config(alternatives_max_words=0)) as h:
        h.stt.hearings[LONG] = (LONG.replace("beans", "jeans"),)
        await h.say(LONG)
        await h.answered()
        assert last_user(h.llm.calls[-1]) == f"{LONG} (or: {LONG.replace('beans', 'jeans')})"
