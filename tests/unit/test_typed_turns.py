"""Typed messages: each one a turn, a burst of them one turn (finding 2 of #13: a flood of
typed messages started and dropped an LLM reply for every one of them)."""

from __future__ import annotations

import asyncio

from tests.helpers.turn_suite import Turns
from voice_agent.core.tasks import TaskSet
from voice_agent.pipeline.typed import TypedTurns

GAP_S = 0.05


class Recorder:
    def __init__(self) -> None:
        self.turns: list[str] = []
        self.cuts = 0

    async def deliver(self, text: str) -> None:
        self.turns.append(text)

    async def interrupt(self) -> None:
        self.cuts += 1


def typed(rec: Recorder, **kw: object) -> tuple[TypedTurns, TaskSet]:
    tasks = TaskSet("t")
    return TypedTurns(rec.deliver, rec.interrupt, tasks, gap_s=GAP_S, **kw), tasks  # type: ignore[arg-type]


async def test_messages_a_person_types_are_turns_at_once() -> None:
    rec = Recorder()
    turns, tasks = typed(rec)
    for text in ("hello", "what time is it?", "thanks"):
        await turns.push(text)
        assert rec.turns[-1] == text  # delivered before push returned: no delay
        await asyncio.sleep(GAP_S * 1.5)
    assert rec.turns == ["hello", "what time is it?", "thanks"] and rec.cuts == 0
    await tasks.stop()


async def test_a_burst_is_one_turn_when_it_ends_and_cuts_the_reply_once() -> None:
    rec = Recorder()
    turns, tasks = typed(rec)
    for i in range(40):  # faster than anyone types
        await turns.push(f"m{i}")
    assert rec.turns == ["m0"] and rec.cuts == 1  # the first reply is cut at the second message
    await asyncio.sleep(GAP_S * 3)
    assert rec.turns == ["m0", "\n".join(f"m{i}" for i in range(1, 40))]
    assert turns.joined == 39 and turns.held == ""
    await turns.push("later")  # a fresh message after the burst: a turn at once again
    assert rec.turns[-1] == "later"
    await tasks.stop()


async def test_a_burst_keeps_its_newest_words_within_the_limit() -> None:
    rec = Recorder()
    turns, tasks = typed(rec, max_chars=100)
    for i in range(60):
        await turns.push(f"word{i:02d}")
    await asyncio.sleep(GAP_S * 3)
    last = rec.turns[-1]
    assert len(last) <= 100 and last.endswith("word59")
    await tasks.stop()


async def test_a_flood_costs_the_llm_two_replies_and_the_history_keeps_every_word() -> None:
    async with Turns() as h:
        h.pipeline._typed.gap_s = 0.5  # the 30 messages come within a few ms: one burst
        for i in range(30):
            await h.pipeline.push_text(f"question {i}")
            await asyncio.sleep(0)
        await h.answered(2)
        await h.settle()
        assert len(h.llm.calls) == 2
        cut, reply = h.replies()
        assert cut.interrupted and not reply.interrupted
        users = [text for role, text in h.history() if role == "user"]
        assert "\n".join(users) == "\n".join(f"question {i}" for i in range(30))
        assert h.finals() == ["question 0", "\n".join(f"question {i}" for i in range(1, 30))]


async def test_a_burst_still_held_at_close_is_kept_in_the_transcript() -> None:
    async with Turns() as h:
        await h.pipeline.push_text("one")
        await h.pipeline.push_text("two")
        await h.pipeline.close()
        assert h.finals()[-1] == "two"
