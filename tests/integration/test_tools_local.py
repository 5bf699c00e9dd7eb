"""Tool calling with the packaged local model (issue #16 item 7's acceptance): a tool returns a
fact the model cannot know; asked for it in ten ways, each in a fresh conversation, the agent
answers with that fact every time."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time

import pytest

from tests.helpers.door_tools import door_code
from tests.helpers.fakes import FakeTTS
from tests.helpers.speech import speech_16k
from voice_agent.core.config import DEFAULT_SYSTEM_PROMPT, load_config
from voice_agent.core.events import MetricsEvent, ResponseEvent, TranscriptEvent
from voice_agent.pipeline.agent import VoicePipeline
from voice_agent.core.recovery import recovery_from_config
from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.reply import ReplySpeaker, ReplyState
from voice_agent.pipeline.sink import BufferSink
from voice_agent.services.base import ChatMessage
from voice_agent.services.factory import build_services
from voice_agent.services.llm_llamacpp import LlamaCppLLM
from voice_agent.tools import ToolCallEvent, ToolRegistry, make_tool

pytestmark = pytest.mark.models


QUESTIONS = [
    "What is today's door code?",
    "Can you tell me the door code?",
    "What's the code for the office door today?",
    "I forgot the door code. What is it?",
    "Tell me the office door code, please.",
    "What code opens the office door today?",
    "Hey, what's the door code?",
    "Do you know today's code for the door?",
    "Which code do I type at the office door?",
    "What is the code to get into the office?",
]


@pytest.fixture(scope="module")
def llm():
    config = load_config(ai={"max_tokens": 40, "threads": 1, "parallel_slots": 1})
    model = LlamaCppLLM(config)
    model.load()
    yield model
    model.close()


async def _ask(llm: LlamaCppLLM, registry: ToolRegistry, question: str, conversation: str
               ) -> tuple[str, TurnMetrics, list[object]]:
    events: list[object] = []

    async def emit(event) -> None:
        events.append(event)

    async def no_op() -> None:
        pass

    speaker = ReplySpeaker(llm, FakeTTS(), BufferSink(), emit,
                           recovery_from_config(load_config().recovery), max_tokens=40,
                           timeout_s=30.0, tools=registry, conversation=conversation)
    state, metrics, gate = ReplyState(), TurnMetrics(turn=1, source="text"), asyncio.Event()
    gate.set()
    messages = [ChatMessage("system", DEFAULT_SYSTEM_PROMPT), ChatMessage("user", question)]
    await speaker.run(messages, state, metrics, on_first_audio=no_op, gate=gate)
    return state.text, metrics, events


async def test_a_fact_only_a_tool_knows_is_answered_ten_times_out_of_ten(llm) -> None:
    registry = ToolRegistry([make_tool(door_code)])
    answers, t0 = [], time.monotonic()
    for i, question in enumerate(QUESTIONS):
        text, metrics, events = await _ask(llm, registry, question, f"door-{i}")
        answers.append((question, text, metrics.tool_calls,
                        [e.name for e in events if isinstance(e, ToolCallEvent)]))
    took = time.monotonic() - t0
    right = [a for a in answers if "4719" in re.sub(r"\D", "", a[1])]
    print(f"\n{len(right)}/10 in {took:.1f} s")
    for a in answers:
        print(a)
    assert len(right) == 10, answers
    assert all(a[2] >= 1 and "door_code" in a[3] for a in answers)


async def test_questions_no_tool_answers_call_none(llm) -> None:
    """The call nudge (tools.local_call_threshold) leaves other questions alone."""
    registry = ToolRegistry([make_tool(door_code)])
    for i, (question, word) in enumerate([("What is the capital of France?", "paris"),
                                          ("How many legs does a spider have?", "eight"),
                                          ("Who wrote Hamlet?", "shakespeare")]):
        text, metrics, _ = await _ask(llm, registry, question, f"other-{i}")
        assert metrics.tool_calls == 0 and word in text.lower(), (question, text)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


async def test_asked_by_voice_and_by_typed_text_through_the_pipeline(llm) -> None:
    """The whole pipeline (Whisper, the local model, Piper) with the tool module from the
    config: a spoken question (espeak) and a typed one each get the code in the reply."""
    config = load_config(ai={"max_tokens": 40, "threads": 1, "parallel_slots": 1},
                         stt={"threads": 1}, tools={"modules": ["tests.helpers.door_tools"]})
    services = dataclasses.replace(build_services(config), llm=llm)  # the model loaded once
    if callable(vad_load := getattr(services.vad, "load", None)):
        vad_load()
    for service in (services.stt, services.tts):
        await asyncio.to_thread(service.load)
    events: list[object] = []

    async def record(event) -> None:
        events.append(event)

    pipeline = VoicePipeline(services, config, emit=record, sink=BufferSink(),
                             session_id="tools-voice")
    try:
        await pipeline.start()
        await pipeline.push_audio(speech_16k("What is the code for the office door?", pad_after=1.0))
        await pipeline.drain()
        heard = [e.text for e in events if isinstance(e, TranscriptEvent) and e.final]
        replies = [e.text for e in events if isinstance(e, ResponseEvent) and e.final]
        assert heard and "code" in heard[0].lower(), heard
        assert replies and "4719" in _digits(replies[-1]), (heard, replies)
        tools = [e for e in events if isinstance(e, ToolCallEvent)]
        assert [(t.name, t.result) for t in tools] == [("door_code", "4 7 1 9")]
        metrics = [e.metrics for e in events if isinstance(e, MetricsEvent)]
        assert metrics[-1]["tool_calls"] == 1 and metrics[-1]["source"] == "voice"
        events.clear()
        await pipeline.push_text("Can you tell me the door code?")
        await pipeline.drain()
        replies = [e.text for e in events if isinstance(e, ResponseEvent) and e.final]
        assert replies and "4719" in _digits(replies[-1]), replies
    finally:
        await pipeline.close()
        for service in (services.stt, services.tts):
            service.close()
