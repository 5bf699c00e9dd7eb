"""Tool calling (issue #16 item 7): tools from type hints, the runner, the model's tool-call
text, and a reply that runs tools, with a scripted model."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
import time
import types
from typing import Literal, Optional

import pytest

import voice_agent
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.fakes import FakeLLM, FakeTTS, Script, words
from voice_agent.core.config import ConfigError, load_config
from voice_agent.core.messages import ChatMessage, ToolCall
from voice_agent.core.recovery import recovery_from_config
from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.reply import ReplySpeaker, ReplyState
from voice_agent.pipeline.sink import BufferSink
from voice_agent.services.llm_openai import OpenAICompatibleLLM
from voice_agent.services.tool_text import ToolCallText
from voice_agent.tools import ToolCallEvent, ToolRegistry, make_tool, run_tool, tools_in


# -- defining tools -----------------------------------------------------------------------------

@voice_agent.tool
def weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius",
            days: Optional[int] = None, tags: list[str] = []) -> str:  # noqa: B006
    """The weather in a city.

    Say it briefly."""
    return f"{city}: 21 {unit}"


def test_a_decorated_function_is_still_itself_and_described_by_its_hints() -> None:
    assert weather("Oslo") == "Oslo: 21 celsius"
    schema = weather.__voice_agent_tool__.schema()  # type: ignore[attr-defined]
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "weather"
    assert fn["description"] == "The weather in a city. Say it briefly."
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["city"]
    assert params["properties"]["city"] == {"type": "string"}
    assert params["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert {"type": "integer"} in params["properties"]["days"]["anyOf"]
    assert params["properties"]["tags"]["items"] == {"type": "string"}
    assert "title" not in json.dumps(params)


def test_named_tool_and_no_parameters() -> None:
    @voice_agent.tool(name="code", description="The door code.")
    async def door_code() -> str:
        return "blue falcon"
    t = door_code.__voice_agent_tool__  # type: ignore[attr-defined]
    assert (t.name, t.description, t.is_async) == ("code", "The door code.", True)
    assert t.parameters == {"properties": {}, "type": "object"}


def test_a_tool_module_from_the_config_and_a_broken_one(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_tools_ok.py").write_text(textwrap.dedent('''
        import voice_agent

        @voice_agent.tool
        def secret() -> str:
            "A secret."
            return "s"

        def not_a_tool() -> None: ...
    '''))
    (tmp_path / "my_tools_broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_config(tools={"modules": ["my_tools_ok"]})
    assert ToolRegistry.from_config(config.tools).names() == ["secret"]
    both = load_config(tools={"modules": ["my_tools_ok"], "builtin": True})
    assert ToolRegistry.from_config(both.tools).names() == ["current_time", "current_date",
                                                            "secret"]
    with pytest.raises(ConfigError, match="cannot import 'my_tools_broken': RuntimeError: boom"):
        load_config(tools={"modules": ["my_tools_broken"]})
    monkeypatch.setenv("VOICE_AGENT_TOOLS__MODULES", '["my_tools_ok"]')
    assert load_config().tools.modules == ["my_tools_ok"]


def test_no_tools_by_default() -> None:
    assert not ToolRegistry.from_config(load_config().tools)


def test_builtin_time_and_date() -> None:
    from voice_agent.tools import builtin
    assert [t.name for t in tools_in(builtin)] == ["current_time", "current_date"]
    assert builtin.current_time()[2] == ":"
    assert str(time.localtime().tm_year) in builtin.current_date()


# -- running them -------------------------------------------------------------------------------

def _registry(*functions, **options) -> ToolRegistry:
    return ToolRegistry([make_tool(f) for f in functions], **options)


async def test_the_runner_validates_runs_and_catches() -> None:
    def add(a: int, b: int = 1) -> int:
        return a + b

    def broken() -> str:
        raise KeyError("no such thing")

    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    reg = _registry(add, broken, slow, timeout_s=0.2)
    ok = await run_tool(reg, ToolCall("1", "add", '{"a": 2, "b": "3"}'))
    assert (ok.ok, ok.content) == (True, "5")
    for call, error in [(ToolCall("2", "add", '{"b": 3}'), "a: Field required"),
                        (ToolCall("3", "add", "{not json"), "not valid JSON"),
                        (ToolCall("4", "nope", "{}"), "no tool named 'nope'"),
                        (ToolCall("5", "broken", ""), "KeyError"),
                        (ToolCall("6", "slow", "{}"), "did not answer within 0.2 s")]:
        result = await run_tool(reg, call)
        assert not result.ok and error in result.content, result
        assert result.content.startswith("Error: ")
    assert (await run_tool(reg, ToolCall("7", "slow", "{}"))).latency_s < 1.0


async def test_a_sync_tool_runs_in_its_own_thread_and_is_abandoned_on_cancel() -> None:
    release = threading.Event()

    def blocking() -> str:
        release.wait(5)
        return "done"

    reg = _registry(blocking)
    task = asyncio.create_task(run_tool(reg, ToolCall("1", "blocking", "{}")))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 0.1
    release.set()


# -- the model's tool-call text (llama.cpp passes the packaged Qwen's calls on as text) ------

@pytest.mark.parametrize("pieces, said, called", [
    (['{{', '"', 'name', '":', ' "', 'door', '_code', '",', ' "', 'arguments', '":', ' {',
      '}}', '}}'], "", [("door_code", "{}")]),
    (["<tool", "_call>\n", '{"name": "door_code", "arguments": {"day": "today"}}',
      "\n</tool_call>"], "", [("door_code", '{"day": "today"}')]),
    (["Let me check. ", '<tool_call>{"name": "door_code"}</tool_call>'], "Let me check. ",
     [("door_code", "{}")]),
    (["Hello", " there."], "Hello there.", []),
    (['{"a": 1} is JSON.'], '{"a": 1} is JSON.', []),  # no call: said after all
    (['{"name": "other", "arguments": {}}'], '{"name": "other", "arguments": {}}', []),
    (["<b>bold</b>"], "<b>bold</b>", []),
])
def test_tool_calls_written_as_text(pieces, said, called) -> None:
    parser = ToolCallText(["door_code"])
    out = "".join(parser.push(p) for p in pieces)
    calls, rest = parser.finish()
    assert out + rest == said
    assert [(c.name, c.arguments) for c in calls] == called


# -- a reply with tools -------------------------------------------------------------------------

class ToolLLM(FakeLLM):
    """FakeLLM whose scripts may hold ToolCall items; it records the tools it was offered."""

    def __init__(self, scripts: list[Script]) -> None:
        super().__init__(scripts=scripts)
        self.offered: list[object] = []

    async def stream(self, messages, *, max_tokens=None, tools=None):  # type: ignore[override]
        self.offered.append(tools)
        async for item in super().stream(messages, max_tokens=max_tokens, tools=tools):
            yield item


ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "What is the door code?")]
CALL = ToolCall("call_1", "door_code", "{}")


class TimedTTS(FakeTTS):
    """FakeTTS that notes when each piece was given to it."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    def synthesize(self, text: str):
        self.at.setdefault(text, time.monotonic())
        return super().synthesize(text)


async def _reply(llm, registry, *, cancel_after: float | None = None, streaming: bool = True,
                 tts: FakeTTS | None = None):
    events: list[object] = []

    async def emit(event) -> None:
        events.append(event)

    async def no_op() -> None:
        pass

    tts = tts or FakeTTS()
    speaker = ReplySpeaker(llm, tts, BufferSink(), emit,
                           recovery_from_config(load_config().recovery), max_tokens=40,
                           timeout_s=5.0, tools=registry, streaming=streaming)
    state, metrics, gate = ReplyState(), TurnMetrics(turn=1), asyncio.Event()
    gate.set()
    run = asyncio.create_task(speaker.run(list(ASK), state, metrics, on_first_audio=no_op,
                                          gate=gate))
    if cancel_after is not None:
        await asyncio.sleep(cancel_after)
        t0 = time.monotonic()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        metrics.marks["cancelled_in_s"] = time.monotonic() - t0  # type: ignore[index]
    else:
        await asyncio.wait_for(run, 10)
    return state, metrics, tts, events


async def test_the_result_goes_back_to_the_model_and_its_answer_is_spoken() -> None:
    def door_code() -> str:
        """Today's door code."""
        return "blue falcon"

    llm = ToolLLM([Script([CALL]), Script(words("The code is blue falcon."))])
    state, metrics, tts, events = await _reply(llm, _registry(door_code))
    assert state.text.strip() == "The code is blue falcon."
    assert " ".join(tts.spoken) == "The code is blue falcon."
    # Offered the tools first, then asked without them for the answer (tools.max_rounds 1).
    assert llm.offered[0] == [make_tool(door_code).schema()] and llm.offered[1] is None
    second = llm.calls[1]
    assert second[:2] == ASK
    assert second[2] == ChatMessage("assistant", "", tool_calls=[CALL])
    assert second[3] == ChatMessage("tool", "blue falcon", tool_call_id="call_1", name="door_code")
    assert state.tool_messages == second[2:]
    shown = [e for e in events if isinstance(e, ToolCallEvent)]
    assert [(e.name, e.result, e.ok) for e in shown] == [("door_code", "blue falcon", True)]
    assert (metrics.tool_calls, metrics.tool_errors) == (1, 0)
    assert metrics.as_dict()["tool_calls"] == 1 and metrics.as_dict()["tool_ms"] >= 0


async def test_two_rounds_when_configured() -> None:
    def door_code() -> str:
        return "blue falcon"

    llm = ToolLLM([Script([CALL]), Script([ToolCall("call_2", "door_code", "{}")]),
                   Script(words("It is blue falcon."))])
    state, metrics, _, _ = await _reply(llm, _registry(door_code, max_rounds=2))
    assert state.text.strip() == "It is blue falcon." and metrics.tool_calls == 2
    assert llm.offered[1] is not None and llm.offered[2] is None


async def test_a_slow_tool_gets_a_filler_first() -> None:
    started: list[float] = []

    async def door_code() -> str:
        started.append(time.monotonic())
        await asyncio.sleep(1.5)
        return "blue falcon"

    llm = ToolLLM([Script([CALL]), Script(words("The code is blue falcon."))])
    t0 = time.monotonic()
    tts = TimedTTS()
    state, _, _, _ = await _reply(llm, _registry(door_code), tts=tts)  # filler after 0.8 s
    assert tts.spoken[0] == "One moment."
    assert 0.75 < tts.at["One moment."] - started[0] < 1.0
    assert state.text.strip() == "One moment. The code is blue falcon."
    assert time.monotonic() - t0 < 3.0


async def test_a_fast_tool_gets_no_filler_and_words_already_said_need_none() -> None:
    def door_code() -> str:
        time.sleep(0.3)
        return "blue falcon"

    llm = ToolLLM([Script([*words("Let me look."), CALL]), Script(words("It is blue falcon."))])
    state, _, tts, _ = await _reply(llm, _registry(door_code, filler_after_s=0.05))
    assert "One moment." not in tts.spoken
    assert state.text.strip() == "Let me look. It is blue falcon."


async def test_a_raising_tool_is_told_to_the_model() -> None:
    def door_code() -> str:
        raise ConnectionError("lock offline")

    llm = ToolLLM([Script([CALL]), Script(words("Sorry, the lock is offline."))])
    state, metrics, _, events = await _reply(llm, _registry(door_code))
    assert llm.calls[1][3].content == "Error: door_code failed: ConnectionError: lock offline"
    assert state.text.strip() == "Sorry, the lock is offline."
    assert (metrics.tool_calls, metrics.tool_errors) == (1, 1)
    assert [e.ok for e in events if isinstance(e, ToolCallEvent)] == [False]


async def test_the_apology_when_the_model_fails_after_a_tool() -> None:
    def door_code() -> str:
        raise ConnectionError("lock offline")

    failing = [Script(["Sorry"], fail_after=0) for _ in range(load_config().recovery.attempts)]
    llm = ToolLLM([Script([CALL]), *failing])
    state, _, tts, _ = await _reply(llm, _registry(door_code))
    assert tts.spoken == ["Sorry, I couldn't get that information right now."]
    llm = ToolLLM([Script([CALL]), Script([])])  # an empty answer: the same
    state, _, tts, _ = await _reply(llm, _registry(door_code))
    assert state.text.strip() == "Sorry, I couldn't get that information right now."


async def test_a_barge_in_during_a_tool_stops_it_at_once() -> None:
    stopped = asyncio.Event()

    async def door_code() -> str:
        try:
            await asyncio.sleep(10)
        finally:
            stopped.set()
        return "never"

    llm = ToolLLM([Script([CALL]), Script(words("Never said."))])
    state, metrics, tts, _ = await _reply(llm, _registry(door_code, filler_after_s=0.1),
                                          cancel_after=0.3)
    assert stopped.is_set()
    assert metrics.marks["cancelled_in_s"] < 0.1  # type: ignore[index]
    assert tts.spoken == ["One moment."] and len(llm.calls) == 1


async def test_without_tools_calls_are_ignored_and_nothing_is_offered() -> None:
    llm = ToolLLM([Script([*words("Hi."), CALL])])
    state, metrics, _, _ = await _reply(llm, None)
    assert state.text.strip() == "Hi." and llm.offered == [None] and metrics.tool_calls == 0


async def test_naive_mode_says_the_answer_once() -> None:
    def door_code() -> str:
        return "blue falcon"

    llm = ToolLLM([Script([CALL]), Script(words("It is blue falcon."))])
    state, _, tts, _ = await _reply(llm, _registry(door_code), streaming=False)
    assert " ".join(tts.spoken) == "It is blue falcon."


# -- an OpenAI-compatible provider ----------------------------------------------------------------

class OneCallOpenAI(FakeOpenAI):
    """Calls a tool in its first reply only, then answers with what the tool said."""

    async def _events(self, body: dict):
        if body["messages"][-1]["role"] == "tool":
            self.tool_calls = []
            self.reply = f"The code is {body['messages'][-1]['content']}."
        async for event in super()._events(body):
            yield event


async def test_tools_through_an_openai_compatible_server() -> None:
    def door_code() -> str:
        """Today's door code."""
        return "blue falcon"

    fake = OneCallOpenAI(reply="", tool_calls=[{"id": "call_x", "name": "door_code",
                                                "arguments": "{}"}]).start()
    try:
        llm = OpenAICompatibleLLM(load_config(ai={"provider": "openai",
                                                  "base_url": fake.base_url}))
        state, metrics, tts, _ = await _reply(llm, _registry(door_code))
    finally:
        fake.stop()
    assert state.text.strip() == "The code is blue falcon."
    first, second = (r["body"] for r in fake.requests)
    assert first["tools"][0]["function"]["name"] == "door_code" and "tools" not in second
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_x"
    assert second["messages"][-1] == {"role": "tool", "content": "blue falcon",
                                      "tool_call_id": "call_x", "name": "door_code"}
    assert metrics.tool_calls == 1


def test_voice_agent_exports_the_decorator() -> None:
    from voice_agent.tools import tool
    assert voice_agent.tool is tool
    module = types.ModuleType("m")
    assert tools_in(module) == [] and "m" not in sys.modules
