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
from voice_agent.services.llm_llamacpp import LlamaCppLLM, _plain, chatml_prefix
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


class _FakeLlamaServer:
    """xllamacpp.Server's chat call: records the request, streams the scripted chunks."""

    def __init__(self, deltas: list[dict]) -> None:
        self.deltas, self.requests = deltas, []

    def handle_chat_completions(self, request: dict, on_chunk) -> None:
        self.requests.append(request)
        for delta in self.deltas:
            if on_chunk({"choices": [{"index": 0, "delta": delta}]}):
                return


async def _llamacpp(deltas: list[dict], **kwargs: object) -> tuple[list[LLMStreamItem], dict]:
    llm = LlamaCppLLM(load_config())
    llm._server = server = _FakeLlamaServer(deltas)  # type: ignore[assignment]
    items = [item async for item in llm.stream(ASK, **kwargs)]  # type: ignore[arg-type]
    return items, server.requests[-1]


async def test_llamacpp_sends_tools_and_reads_the_calls_the_model_wrote_as_text() -> None:
    # The packaged Qwen copies its template's doubled braces; llama.cpp passes that on as text.
    pieces = ['{{', '"name": "get_weather", ', '"arguments": {"city": ', '"Paris"}}', '}}']
    items, request = await _llamacpp([{"content": p} for p in pieces], tools=[WEATHER])
    assert request["tools"] == [WEATHER]
    assert len(items) == 1 and isinstance(items[0], ToolCall)
    assert (items[0].name, json.loads(items[0].arguments)) == ("get_weather", {"city": "Paris"})
    items, request = await _llamacpp([{"content": "Sunny"}, {"content": "."}])
    assert items == ["Sunny", "."] and "tools" not in request  # no tools: text as it comes


async def test_llamacpp_yields_the_calls_llama_cpp_parsed_after_the_text() -> None:
    deltas = [{"content": "Checking."},
              {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                               "function": {"name": "get_weather", "arguments": '{"ci'}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}]
    items, _ = await _llamacpp(deltas, tools=[WEATHER])
    assert items == ["Checking.", ToolCall("c1", "get_weather", '{"city": "Oslo"}')]


def test_llamacpp_prefills_tool_messages_through_the_template() -> None:
    call = ToolCall("c", "f")
    assert _plain(ASK)
    assert not _plain([*ASK, ChatMessage("assistant", "", tool_calls=(call,))])
    assert not _plain([*ASK, ChatMessage("tool", "1", tool_call_id="c")])


async def test_llamacpp_keeps_rendering_the_tools_once_replies_had_some() -> None:
    """The answer after tool results and the prefills render the same tools as the replies
    (their prompts start alike, the slot's cache holds), with calls ruled out."""
    llm = LlamaCppLLM(load_config())
    assert "tools" not in llm._request(ASK, 10, 0)
    assert llm._chatml(ASK) == chatml_prefix(ASK)
    await _llamacpp_with(llm, [{"content": "Hi."}], tools=[WEATHER])
    later = llm._request(ASK, 10, 0)
    assert later["tools"] == [WEATHER] and ["{", False] in later["logit_bias"]
    assert "logit_bias" not in llm._request(ASK, 10, 0, tools=[WEATHER])
    call = ToolCall("c", "get_weather")
    answer = [*ASK, ChatMessage("assistant", "", tool_calls=(call,)),
              ChatMessage("tool", "21", tool_call_id="c")]
    assert "tools" not in llm._request(answer, 10, 0)  # the answer after results: none
    llm._system_blocks[json.dumps(["Be brief.", [WEATHER]], sort_keys=True)] = "<SYS+TOOLS>"
    assert llm._chatml(ASK) == "<SYS+TOOLS>" + chatml_prefix(ASK[1:])
    assert llm._chatml(ASK[1:]) is None  # no system message to put the tools in


async def _llamacpp_with(llm: LlamaCppLLM, deltas: list[dict], **kwargs: object) -> None:
    llm._server = _FakeLlamaServer(deltas)  # type: ignore[assignment]
    [item async for item in llm.stream(ASK, **kwargs)]  # type: ignore[arg-type]
