"""A user who goes quiet after the agent's reply is asked once, then told goodbye (issue #14)."""

from __future__ import annotations

from tests.helpers.turn_suite import Turns
from tests.helpers.turns import config
from voice_agent.core.events import ResponseEvent


def quick(prompt_s: float = 0.3, goodbye_s: float = 0.3):  # noqa: ANN201
    cfg = config()
    return cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={
        "idle_prompt_s": prompt_s, "idle_goodbye_s": goodbye_s})})


async def played_out(h: Turns) -> None:
    """Let the agent's audio out until it listens again."""
    for _ in range(200):
        h.sink.play_out()
        await h.settle()
        if h.pipeline.coordinator.idle:
            return
    raise AssertionError("the agent never finished speaking")


def lines(h: Turns) -> list[str]:
    return [e.text for e in h.of(ResponseEvent) if e.final]


async def test_silence_after_a_reply_gets_a_prompt_then_a_goodbye_and_the_end() -> None:
    async with Turns(quick()) as h:
        ended: list[str] = []
        h.pipeline.on_end = ended.append
        h.script("Paris.")
        await h.say("what is the capital of france")
        await h.answered()
        await played_out(h)
        await h.until(lambda: len(lines(h)) == 2, "the prompt", timeout=3)
        assert lines(h)[-1] == "Are you still there?"
        await h.until(lambda: "Are you still there?" in h.tts.spoken, "the prompt said")
        await played_out(h)
        await h.until(lambda: len(lines(h)) == 3, "the goodbye", timeout=3)
        assert not ended  # not before the goodbye was heard
        await played_out(h)
        await h.until(lambda: ended, "the end of the session", timeout=3)
        assert lines(h)[-1] == "It seems you've stepped away. Goodbye for now!"
        assert h.history()[-2:] == [("assistant", "Are you still there?"),
                                    ("assistant", "It seems you've stepped away. Goodbye for now!")]


async def test_an_answer_to_the_prompt_goes_on_with_the_conversation() -> None:
    async with Turns(quick(goodbye_s=0.6)) as h:
        ended: list[str] = []
        h.pipeline.on_end = ended.append
        h.script("Paris.")
        await h.say("what is the capital of france")
        await h.answered()
        await played_out(h)
        await h.until(lambda: len(lines(h)) == 2, "the prompt", timeout=3)
        await played_out(h)
        await h.say("yes I am here")
        await h.answered(3)
        await played_out(h)
        # The clock starts again: the next prompt, not the goodbye.
        await h.until(lambda: len(lines(h)) == 4, "a prompt again", timeout=3)
        assert lines(h)[-1] == "Are you still there?" and not ended


async def test_no_prompt_before_the_first_answer_or_when_turned_off() -> None:
    import asyncio

    async with Turns(quick()) as h:
        await asyncio.sleep(0.8)  # a fresh session, nobody spoke yet: the reaper's business
        assert lines(h) == []
    async with Turns(quick(prompt_s=0)) as h:
        h.script("Paris.")
        await h.say("what is the capital of france")
        await h.answered()
        h.sink.play_out()
        await asyncio.sleep(0.8)
        assert lines(h) == ["Paris."]
