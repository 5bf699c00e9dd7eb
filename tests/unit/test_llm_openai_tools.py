"""The OpenAI-compatible adapter with tools: what it sends, and tool calls assembled from the
streamed fragments (OpenAI's documented format), against the fake server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.helpers.fake_openai import FakeOpenAI
from voice_agent.core.config import load_config
from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage, LLMStreamItem, ToolCall
from voice_agent.services.llm_llamacpp import LlamaCppLLM, _plain
from voice_agent.services.llm_openai import OpenAICompatibleLLM, _ToolCalls

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Paris?")]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    f = FakeOpenAI().start()
    yield f
    f.stop()


@pytest.fixture
def llm(fake: FakeOpenAI) -> Iterator[OpenAICompatibleLLM]:
    fake.reply, fake.tool_calls, fake.interleave_tool_calls = "Sure.", [], False
    fake.requests.clear()
    yield OpenAICompatibleLLM(load_config(ai={"provider": "openai", "base_url": fake.base_url}))


async def _all(llm: OpenAICompatibleLLM, **kwargs: object) -> list[LLMStreamItem]:
    return [item async for item in llm.stream(ASK, **kwargs)]  # type: ignore[arg-type]


async def test_without_tools_nothing_about_tools_is_sent(fake: FakeOpenAI,
                                                         llm: OpenAICompatibleLLM) -> None:
    assert "".join(await _all(llm)).strip() == "Sure."  # type: ignore[arg-type]
    await _all(llm, tools=[])
    assert all("tools" not in r["body"] for r in fake.requests)
    assert fake.requests[0]["body"]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


async def test_tools_are_passed_through(fake: FakeOpenAI, llm: OpenAICompatibleLLM) -> None:
    await _all(llm, tools=[WEATHER])
    assert fake.requests[-1]["body"]["tools"] == [WEATHER]


async def test_a_streamed_tool_call_comes_whole_after_the_text(fake: FakeOpenAI,
                                                               llm: OpenAICompatibleLLM) -> None:
    args = json.dumps({"city": "Paris", "unit": "celsius"})
    fake.tool_calls = [{"id": "call_abc", "name": "get_weather", "arguments": args}]
    items = await _all(llm, tools=[WEATHER])
    assert items[-1] == ToolCall("call_abc", "get_weather", args)
    assert all(isinstance(i, str) for i in items[:-1])
    assert "".join(items[:-1]).strip() == "Sure."  # type: ignore[arg-type]
    assert items[-1].parsed_arguments() == {"city": "Paris", "unit": "celsius"}  # type: ignore[union-attr]


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_calls_are_told_apart_by_index(fake: FakeOpenAI, llm: OpenAICompatibleLLM,
                                                      interleave: bool) -> None:
    fake.reply = ""  # a reply that only calls tools
    fake.interleave_tool_calls = interleave
    fake.tool_calls = [{"name": "get_weather", "arguments": '{"city": "Paris"}'},
                       {"name": "get_weather", "arguments": '{"city": "Lyon", "days": 3}'},
                       {"name": "get_time", "arguments": ""}]
    items = await _all(llm, tools=[WEATHER])
    assert items == [ToolCall("call_0abc", "get_weather", '{"city": "Paris"}'),
                     ToolCall("call_1abc", "get_weather", '{"city": "Lyon", "days": 3}'),
                     ToolCall("call_2abc", "get_time", "{}")]


def test_fragments_without_index_or_id_and_broken_ones() -> None:
    calls = _ToolCalls()
    # Whole calls with neither index nor id (some servers): their place in the list orders them.
    calls.add([{"function": {"name": "a", "arguments": "{}"}},
               {"function": {"name": "b", "arguments": '{"x": 1}'}}])
    calls.add("not a list")
    calls.add([None, {"index": 5}])  # noise: ignored, or a call that never gets a name
    with pytest.raises(ProviderError, match="without a name"):
        calls.complete("openai")
    good = _ToolCalls()
    good.add([{"function": {"name": "a", "arguments": "{}"}},
              {"function": {"name": "b", "arguments": '{"x": 1}'}}])
    assert good.complete("openai") == [ToolCall("call_0", "a", "{}"),
                                       ToolCall("call_1", "b", '{"x": 1}')]


async def test_tool_messages_go_out_in_the_openai_format(fake: FakeOpenAI,
                                                         llm: OpenAICompatibleLLM) -> None:
    call = ToolCall("call_abc", "get_weather", '{"city": "Paris"}')
    history = [*ASK, ChatMessage("assistant", "", tool_calls=(call,)),
               ChatMessage("tool", '{"temp_c": 21}', tool_call_id="call_abc")]
    [item async for item in llm.stream(history, tools=[WEATHER])]
    sent = fake.requests[-1]["body"]["messages"]
    assert sent[2] == {"role": "assistant", "content": None, "tool_calls": [call.as_dict()]}
    assert sent[3] == {"role": "tool", "content": '{"temp_c": 21}', "tool_call_id": "call_abc"}


async def test_llamacpp_refuses_tools_clearly_without_touching_the_model() -> None:
    llm = LlamaCppLLM(load_config())  # not loaded: the refusal comes first
    with pytest.raises(ProviderError, match="not supported") as err:
        [item async for item in llm.stream(ASK, tools=[WEATHER])]
    assert err.value.retryable is False


def test_llamacpp_prefills_tool_messages_through_the_template() -> None:
    call = ToolCall("c", "f")
    assert _plain(ASK)
    assert not _plain([*ASK, ChatMessage("assistant", "", tool_calls=(call,))])
    assert not _plain([*ASK, ChatMessage("tool", "1", tool_call_id="c")])
