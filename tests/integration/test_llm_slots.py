"""The local LLM writes several conversations' replies at once, one llama.cpp slot each.

With one slot, four people talking at once heard the fourth answer only after three whole
replies; with a slot each, every reply starts at once. Real llama.cpp, with the tiny SmolLM2
(the plumbing, not the answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.integration.conftest import make_config
from voice_agent.core.config import V3Config
from voice_agent.services.base import ChatMessage
from voice_agent.services.llm_llamacpp import LlamaCppLLM

pytestmark = pytest.mark.models

SLOTS = 4
LONG = "Write a long story about a dog named Max."
"""SmolLM2 writes 400 tokens to this (it answers most questions in a dozen)."""


@pytest.fixture(scope="module")
def config() -> V3Config:
    return make_config(ai={"model": "smollm2-135m", "parallel_slots": SLOTS, "max_tokens": 60,
                           "temperature": 0.0, "system_prompt": "You are a helpful assistant.",
                           "prompt_cache_mib": 0})  # a history found cached is in the slot


def ask(config: V3Config, text: str) -> list[ChatMessage]:
    return [ChatMessage("system", config.ai.system_prompt), ChatMessage("user", text)]


class Reply:
    """One reply streamed in its own task, with when its first piece came and when it ended."""

    def __init__(self, llm: LlamaCppLLM, messages: list[ChatMessage], conversation: str, *,
                 max_tokens: int = 60, reserve: bool = True) -> None:
        self.text = ""
        self.reserved = asyncio.Event()
        self.first = asyncio.Event()
        self.first_at: float | None = None
        self.ended_at: float | None = None
        self.task = asyncio.create_task(self._run(llm, messages, conversation, max_tokens,
                                                  reserve))

    async def _run(self, llm: LlamaCppLLM, messages: list[ChatMessage], conversation: str,
                   max_tokens: int, reserve: bool) -> None:
        async with (llm.reserve(conversation=conversation) if reserve else contextlib.nullcontext()):
            self.reserved.set()
            async for piece in llm.stream(messages, max_tokens=max_tokens,
                                          conversation=conversation):
                if self.first_at is None:
                    self.first_at = time.monotonic()
                    self.first.set()
                self.text += str(piece)
        self.ended_at = time.monotonic()


@pytest.fixture
async def idle(llm: LlamaCppLLM) -> AsyncIterator[LlamaCppLLM]:
    yield llm
    assert await asyncio.to_thread(llm.wait_idle, 5.0)
    assert llm.slots.busy == 0 and llm.waiting == 0  # every slot given back


async def test_four_conversations_are_answered_at_once(idle: LlamaCppLLM,
                                                        config: V3Config) -> None:
    """Every reply has its first piece before any of them ends: they are written side by
    side, not one after another (with one slot the second starts only when the first ends)."""
    replies = [Reply(idle, ask(config, LONG), f"c{i}") for i in range(SLOTS)]
    await asyncio.wait_for(asyncio.gather(*(r.task for r in replies)), 120)
    firsts = [r.first_at for r in replies]
    ends = [r.ended_at for r in replies]
    assert None not in firsts and None not in ends
    assert max(firsts) < min(ends), (firsts, ends)  # type: ignore[type-var]
    assert all("max" in r.text.lower() for r in replies), [r.text for r in replies]
    assert {idle.slots.owner(i) for i in range(SLOTS)} == {f"c{i}" for i in range(SLOTS)}


async def test_a_fifth_reply_waits_for_a_slot_and_gets_the_one_that_ends_or_is_cut(
        idle: LlamaCppLLM, config: V3Config) -> None:
    long = [Reply(idle, ask(config, LONG), f"long{i}", max_tokens=400) for i in range(3)]
    short = Reply(idle, ask(config, "Say hello."), "short", max_tokens=8)
    await asyncio.wait_for(asyncio.gather(*(r.first.wait() for r in long)), 60)
    fifth = Reply(idle, ask(config, "Say yes."), "fifth", max_tokens=8)
    await asyncio.sleep(0.05)
    assert not fifth.reserved.is_set() or short.ended_at is not None
    if not fifth.reserved.is_set():
        assert idle.waiting >= 1  # what the pipeline reads to know replies are waiting
    # The short reply ends: the fifth gets its slot.
    await asyncio.wait_for(fifth.task, 60)
    assert fifth.text.strip() and short.ended_at is not None
    assert all(r.ended_at is None for r in long)  # it did not wait for a long one to end

    # All four slots busy again; a sixth waits until a reply is cut (a barge-in).
    refill = Reply(idle, ask(config, LONG), "refill", max_tokens=400)
    await asyncio.wait_for(refill.first.wait(), 60)
    sixth = Reply(idle, ask(config, "Say no."), "sixth", max_tokens=8)
    await asyncio.sleep(0.3)
    assert not sixth.reserved.is_set() and idle.waiting == 1
    cut_at = time.monotonic()
    long[0].task.cancel()
    await asyncio.wait_for(sixth.reserved.wait(), 5)
    # Its slot came free once llama.cpp let go of it (the next token, ~100 ms here).
    assert time.monotonic() - cut_at < 1.5
    await asyncio.wait_for(sixth.task, 60)
    assert sixth.text.strip()
    for r in (*long[1:], refill):
        r.task.cancel()
    await asyncio.gather(*(r.task for r in (*long, refill)), return_exceptions=True)


async def test_a_conversation_finds_its_history_in_its_own_slot(idle: LlamaCppLLM,
                                                                config: V3Config) -> None:
    """Other conversations' turns in between (taking the other slots) leave a's history
    cached: its second turn reads only the new words."""

    async def turn(messages: list[ChatMessage], conversation: str) -> tuple[str, int, int]:
        text = "".join([str(p) async for p in idle.stream(messages, max_tokens=12,
                                                           conversation=conversation)])
        stats = idle.last_stats
        assert stats.cached_prompt_tokens is not None and stats.slot is not None
        return text, stats.cached_prompt_tokens, stats.slot

    await turn(ask(config, "Name a colour."), "b")
    first = ask(config, "What is the capital of France? Answer in one word.")
    reply, cached_first, slot = await turn(first, "a")
    await turn(ask(config, "Name an animal."), "c")
    # Every slot holds the system prompt (warm-up): any slot would find that much cached.
    second = [*first, ChatMessage("assistant", reply), ChatMessage("user", "And of Italy?")]
    _, cached_second, slot_second = await turn(second, "a")
    assert slot_second == slot
    assert cached_second >= cached_first + 10, (cached_first, cached_second)


async def test_a_prefill_runs_beside_another_reply_but_never_before_its_first_piece(
        idle: LlamaCppLLM, config: V3Config) -> None:
    """Sessions read their users' words while another session's reply is written, but not
    while that reply still waits for its first piece (it would start later)."""
    other = Reply(idle, ask(config, LONG), "other", max_tokens=400)
    await asyncio.wait_for(other.reserved.wait(), 10)
    if not other.first.is_set():
        assert not idle.prefill(ask(config, "What is the capital"), conversation="mine")
    await asyncio.wait_for(other.first.wait(), 60)
    assert idle.prefill(ask(config, "What is the capital"), conversation="mine")
    assert not idle.prefill(ask(config, "What is the capital of"), conversation="mine")
    other.task.cancel()
    await asyncio.gather(other.task, return_exceptions=True)
