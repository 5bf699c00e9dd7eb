"""A reply far ahead of its listener stops writing while another reply waits in silence, and
then goes on with its own words (pipeline/pace.py in ReplySpeaker), model-free."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from tests.helpers.fakes import FakeLLM, FakeTTS, words
from voice_agent.core.activity import Activity
from voice_agent.core.recovery import recovery_from_config
from voice_agent.core.config import V3Config
from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.pace import Pace
from voice_agent.pipeline.reply import ReplySpeaker, ReplyState
from voice_agent.pipeline.sink import BufferSink
from voice_agent.services.base import ChatMessage

REPLY = "one two three. four five six. seven eight nine. ten eleven twelve."


class ContinuingLLM(FakeLLM):
    """Writes REPLY, and continues it from an assistant message last in the prompt."""

    continues_replies = True

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                     tools: Sequence[Mapping[str, Any]] | None = None) -> AsyncIterator[str]:
        self.calls.append(messages)
        done = messages[-1].content if messages[-1].role == "assistant" else ""
        rest = REPLY[len(done):]
        for token in words(rest) if not done else [f" {w}" for w in rest.split()]:
            await asyncio.sleep(0)
            yield token


class AheadSink(BufferSink):
    """A listener with lots of audio queued (nothing plays): the reply is far ahead."""

    def queued_s(self) -> float:
        return 10.0 if self.audio()[0].size else 0.0


def ahead_speaker(llm: ContinuingLLM, activity: Activity, **how: bool) -> ReplySpeaker:
    """A speaker whose listener has lots of audio queued, on ``activity``'s shared models."""
    return ReplySpeaker(llm, FakeTTS(), AheadSink(), _nothing,
                        recovery_from_config(V3Config().recovery), max_tokens=100,
                        timeout_s=2.0, first_piece_max_words=3, activity=activity, **how)


async def test_a_reply_ahead_pauses_for_a_silent_one_then_goes_on_with_its_words() -> None:
    activity = Activity()
    llm = ContinuingLLM()
    speaker = ahead_speaker(llm, activity, make_way=True)
    other = Pace(activity)
    state, gate = ReplyState(), asyncio.Event()
    gate.set()
    with other.silent_until() as other_audible:  # another session waits for its first audio
        run = asyncio.create_task(speaker.run([ChatMessage("user", "count")], state,
                                              TurnMetrics(turn=1), on_first_audio=_first,
                                              gate=gate))
        async with asyncio.timeout(5):
            while state.pace.yields == 0:
                await asyncio.sleep(0.01)
        written = state.text
        assert written and written != REPLY  # it stopped part way, after its first audio
        await asyncio.sleep(0.2)
        assert state.text == written and len(llm.calls) == 1  # and writes nothing meanwhile
        other_audible()
        async with asyncio.timeout(5):
            await run
    assert state.text == REPLY  # the same reply, whole: nothing lost or said twice
    assert len(llm.calls) == 2
    assert llm.calls[1][-1] == ChatMessage("assistant", written)


async def test_alone_a_reply_never_pauses() -> None:
    activity = Activity()
    llm = ContinuingLLM()
    speaker = ahead_speaker(llm, activity, make_way=True)
    state, gate = ReplyState(), asyncio.Event()
    gate.set()
    async with asyncio.timeout(5):
        await speaker.run([ChatMessage("user", "count")], state, TurnMetrics(turn=1),
                          on_first_audio=_first, gate=gate)
    assert state.text == REPLY and len(llm.calls) == 1 and state.pace.yields == 0
    assert activity.silent_replies() == 0


async def _nothing(_event: object) -> None:
    pass


async def _first() -> None:
    pass


async def test_by_default_a_reply_never_pauses_for_others() -> None:
    """pipeline.make_way is off by default: nothing changes for a reply ahead."""
    activity = Activity()
    llm = ContinuingLLM()
    speaker = ahead_speaker(llm, activity)
    state, gate = ReplyState(), asyncio.Event()
    gate.set()
    with Pace(activity, "other").silent_until():
        async with asyncio.timeout(5):
            await speaker.run([ChatMessage("user", "count")], state, TurnMetrics(turn=1),
                              on_first_audio=_first, gate=gate)
    assert state.text == REPLY and len(llm.calls) == 1 and state.pace.yields == 0
