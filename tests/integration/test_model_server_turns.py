"""End of turn by meaning and prefill through the model tier: a worker's ``ai.provider =
"openai"`` service against a real ``voice-agent model-server`` (llama.cpp's server, SmolLM2
135M, whose template is ChatML), and against servers that cannot (the fake OpenAI server, with
no llama.cpp endpoints; the Groq preset on it), where both stay off (services/llm_remote_turn.py).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.fake_openai import FakeOpenAI
from tests.integration.conftest import free_port, make_config
from tests.integration.test_model_server import ModelServer, start, stop, worker_llm
from voice_agent.core.messages import ChatMessage
from voice_agent.services.chatml import chatml_prefix
from voice_agent.services.llm_groq import GroqLLM
from voice_agent.services.llm_openai import OpenAICompatibleLLM

SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Answer briefly.")
PAIRS = [("What is the capital of France?", "What is the capital of"),
         ("How many legs does a spider have?", "How many legs does a"),
         ("Can you tell me a joke?", "Can you tell me a")]
"""A complete question and the same question cut before its last word (as a pause cuts it)."""


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    s = start("--parallel", "2", port=free_port())
    yield s
    if s.proc.poll() is None:
        stop(s)


def post(server: ModelServer, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{server.url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def unique_system() -> ChatMessage:
    """A system prompt no slot has cached yet (each test starts from a cold prompt)."""
    return ChatMessage("system", f"You are assistant {uuid.uuid4().hex[:8]}. Be brief.")


@pytest.mark.models
async def test_complete_questions_score_above_unfinished_ones(server: ModelServer) -> None:
    llm = worker_llm(server)
    llm.warmup()  # asks /props, /apply-template and /tokenize once
    assert llm.turns.state is True
    assert llm.turns.end_id == post(server, "/tokenize", {
        "content": "<|im_end|>", "add_special": False, "parse_special": True})["tokens"][0]
    for complete, unfinished in PAIRS:
        done = await llm.end_of_turn_probability([SYSTEM, ChatMessage("user", complete)],
                                                 conversation="a")
        cut = await llm.end_of_turn_probability([SYSTEM, ChatMessage("user", unfinished)],
                                                conversation="a")
        assert done is not None and cut is not None
        assert 0.0 <= cut < done <= 1.0, (complete, done, cut)
        # The system prompt and the question's start were read before: only the rest is new.
        assert llm.last_end_of_turn_timings.get("cache_n", 0) > 10, llm.last_end_of_turn_timings
    # With the punctuation kept only <|im_end|> counts, as in-process.
    kept = await llm.end_of_turn_probability([SYSTEM, ChatMessage("user", PAIRS[0][0])],
                                             keep_punctuation=True)
    assert kept is not None and 0.0 <= kept <= 1.0
    # A statement before the question: its full stop weighed by the message ending after it,
    # as in-process (the bar at its own score, so that this small model's check applies).
    lead = [SYSTEM, ChatMessage("user", "My sister is learning to play the piano.")]
    whole = await llm.end_of_turn_probability(lead)
    assert whole is not None and whole > 0.05
    checked = await llm.end_of_turn_probability(lead, statement_check_p=whole)
    assert checked is not None and checked < whole, (whole, checked)
    # Nothing left to judge, or a reply's tool calls in the way: no score, no request.
    assert await llm.end_of_turn_probability([SYSTEM, ChatMessage("user", "?")]) is None


@pytest.mark.models
async def test_a_prefill_leaves_the_prompt_cached_for_the_reply(server: ModelServer) -> None:
    llm = worker_llm(server)  # no warm-up: asked at first use instead
    said = [unique_system(), ChatMessage("user", "Tell me a short story about a dragon who")]
    assert llm.prefill(said, conversation="b") is False  # not known yet: asked meanwhile
    await llm.turns.ready()
    assert llm.prefill(said, conversation="b") is True
    await llm.turns.prefilled("b", 20, drop=False)
    prefix = post(server, "/tokenize", {"content": chatml_prefix(said),
                                        "parse_special": True})["tokens"]

    def reply_to(messages: list[ChatMessage]) -> int:
        answer = post(server, "/v1/chat/completions", {
            "messages": [m.as_dict() for m in messages], "max_tokens": 1, "temperature": 0})
        return int(answer["timings"]["cache_n"])

    words = said[1].content + " loves books?"
    cached = reply_to([said[0], ChatMessage("user", words)])
    cold = reply_to([unique_system(), ChatMessage("user", words)])  # the same, not prefilled
    assert cached >= len(prefix) - 1, (cached, len(prefix))
    assert cold < len(prefix) // 2, (cold, len(prefix))


@pytest.mark.models
async def test_one_prefill_at_a_time_per_conversation(server: ModelServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefills while one is in flight wait; only the newest of them is read after it."""
    llm = worker_llm(server)
    llm.warmup()
    system = unique_system()
    reads: list[str] = []
    read = llm.turns._read

    async def counted(messages: list[ChatMessage]) -> None:
        reads.append(messages[-1].content)
        await read(messages)

    monkeypatch.setattr(llm.turns, "_read", counted)
    # Three before the first is sent: the newest is read, the others dropped; "d" beside it.
    for words in ("Tell me", "Tell me about the", "Tell me about the moon"):
        assert llm.prefill([system, ChatMessage("user", words)], conversation="c")
    assert llm.prefill([system, ChatMessage("user", "Other words")], conversation="d")
    await asyncio.gather(llm.turns.prefilled("c", 20, drop=False),
                         llm.turns.prefilled("d", 20, drop=False))
    assert sorted(reads) == ["Other words", "Tell me about the moon"], reads
    # One in flight: the next waits for it, then goes.
    reads.clear()
    assert llm.prefill([system, ChatMessage("user", "Tell me about the moon and")],
                       conversation="c")
    await asyncio.sleep(0)  # the read is sent
    assert llm.prefill([system, ChatMessage("user", "Tell me about the moon and its")],
                       conversation="c")
    for _ in range(200):
        if "c" not in llm.turns._prefills:
            break
        await asyncio.sleep(0.05)
    assert reads == ["Tell me about the moon and", "Tell me about the moon and its"], reads
    # A reply waits for the read in flight (and drops those not sent) instead of reading
    # beside it in another slot.
    reads.clear()
    for words in ("What is", "What is the moon"):
        llm.prefill([system, ChatMessage("user", words)], conversation="c")
    await asyncio.sleep(0)
    pieces = [p async for p in llm.stream([system, ChatMessage("user", "What is the moon?")],
                                          conversation="c")]
    assert pieces and reads == ["What is the moon"] and "c" not in llm.turns._prefills


def test_servers_without_llama_cpp_endpoints_get_no_scores_nor_prefills() -> None:
    """The fake OpenAI server has no /props (404), like OpenAI, Groq or vLLM: the provider
    says None, prefills nothing, and its replies are as before."""
    fake = FakeOpenAI().start()
    try:
        config = make_config(ai={"provider": "openai", "base_url": fake.base_url,
                                 "remote_model": "fake-model"})
        llm = OpenAICompatibleLLM(config)
        llm.load()
        llm.warmup()
        assert llm.turns.state is False

        async def turn() -> str:
            said = [SYSTEM, ChatMessage("user", "What is the capital of France?")]
            assert await llm.end_of_turn_probability(said, conversation="a") is None
            assert llm.prefill(said, conversation="a") is False
            return "".join([str(p) async for p in llm.stream(said, conversation="a")])

        assert "Paris" in asyncio.run(turn())
        assert [r["path"] for r in fake.requests] == ["/v1/chat/completions"]

        groq = GroqLLM(make_config(ai={"provider": "groq", "api_key": "k",
                                       "base_url": fake.groq_base_url}))
        said = [SYSTEM, ChatMessage("user", "Hello?")]
        assert asyncio.run(groq.end_of_turn_probability(said)) is None  # asked at first use
        assert groq.turns.state is False and groq.prefill(said) is False
    finally:
        fake.stop()
