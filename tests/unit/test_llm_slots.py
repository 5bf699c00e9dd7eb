"""The local LLM's slots: several replies at once, each conversation on its own slot, first
come first served beyond the slot count, and side jobs (prefills, end-of-turn scores) that never
make a reply wait. No model: the table alone (tests/integration/test_llm_slots.py runs it with
llama.cpp)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from voice_agent.services.llm_slots import SlotTable


async def _pending(coro: object) -> asyncio.Task[int]:
    task = asyncio.create_task(coro)  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    return task


async def test_as_many_replies_as_slots_run_at_once_and_the_next_waits_its_turn() -> None:
    table = SlotTable(4)
    slots = [await asyncio.wait_for(table.acquire(c), 1) for c in "abcd"]
    assert sorted(slots) == [0, 1, 2, 3]
    fifth = await _pending(table.acquire("e"))
    sixth = await _pending(table.acquire("f"))
    assert not fifth.done() and not sixth.done() and table.waiting == 2
    table.release(slots[2])  # c's reply ends: the first in line gets its slot
    assert await asyncio.wait_for(fifth, 1) == slots[2]
    assert not sixth.done() and table.waiting == 1
    table.release(slots[0])
    assert await asyncio.wait_for(sixth, 1) == slots[0]
    assert table.waiting == 0


async def test_a_conversation_comes_back_to_its_own_slot() -> None:
    table = SlotTable(3)
    a = await table.acquire("a")
    b = await table.acquire("b")
    table.release(a)
    table.release(b)
    # A new conversation takes a slot nobody has used, not a or b's cache.
    c = await table.acquire("c")
    assert c not in (a, b)
    table.release(c)
    assert await table.acquire("b") == b
    assert await table.acquire("a") == a
    assert table.owner(a) == "a"


async def test_a_new_conversation_reuses_the_slot_quiet_longest() -> None:
    table = SlotTable(2)
    for conversation in ("a", "b", "a"):
        table.release(await table.acquire(conversation))
    slot_b = next(i for i in range(2) if table.owner(i) == "b")
    assert await table.acquire("c") == slot_b


async def test_a_reply_waits_for_its_own_busy_slot_without_holding_up_others() -> None:
    """Its history is cached there (a cut reply's thread, or its prefill, about to let go):
    cheaper than reading it all again elsewhere. Another conversation behind it goes on."""
    table = SlotTable(2)
    a = await table.acquire("a")
    again = await _pending(table.acquire("a"))
    other = await asyncio.wait_for(table.acquire("b"), 1)
    assert other != a and not again.done()
    table.release(a)
    assert await asyncio.wait_for(again, 1) == a


async def test_side_jobs_never_make_a_reply_wait() -> None:
    table = SlotTable(2)
    a = await table.acquire("a")
    # a's reply has no first token yet: a prefill elsewhere would slow it down.
    assert table.try_acquire("b") is None
    table.started(a)
    b = table.try_acquire("b")
    assert b is not None and b != a  # beside a's reply, in b's own slot
    assert table.try_acquire("a") is None  # its own slot is busy with its reply
    assert table.try_acquire("c") is None  # no slot free
    waiting = await _pending(table.acquire("c"))
    table.release(b)
    assert await asyncio.wait_for(waiting, 1) == b
    table.release(b)
    table.release(a)
    reply = await _pending(table.acquire("a"))
    assert reply.done()
    assert table.try_acquire("z") is None  # it has not started: side jobs wait


async def test_a_side_job_waits_up_to_its_timeout_for_its_own_slot() -> None:
    table = SlotTable(2)
    slot = table.try_acquire("a")
    assert slot is not None
    threading.Timer(0.1, table.release, (slot,)).start()  # the prefill's thread returns
    got = await asyncio.to_thread(table.try_acquire, "a", 2.0)
    assert got == slot
    table.release(slot)
    assert await asyncio.to_thread(table.try_acquire, "a", 0.05) == slot


async def test_a_cancelled_waiter_leaves_the_line_and_loses_no_slot() -> None:
    table = SlotTable(1)
    held = await table.acquire("a")
    gone = await _pending(table.acquire("b"))
    behind = await _pending(table.acquire("c"))
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert table.waiting == 1
    table.release(held)
    assert await asyncio.wait_for(behind, 1) == held
    # Cancelled in the same step as its slot is granted: the slot comes back.
    late = await _pending(table.acquire("d"))
    table.release(held)
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    assert await asyncio.wait_for(table.acquire("e"), 1) == held


async def test_a_release_from_a_worker_thread_wakes_the_waiting_reply() -> None:
    table = SlotTable(1)
    slot = await table.acquire("a")
    waiting = await _pending(table.acquire("b"))
    threading.Thread(target=table.release, args=(slot,)).start()
    assert await asyncio.wait_for(waiting, 1) == slot
    assert table.busy == 1
    table.release(slot)
    assert await asyncio.to_thread(table.wait_idle, 1.0)


async def test_callers_that_name_no_conversation_share_one_slot_in_turn() -> None:
    """As with one slot before: anonymous replies take turns and keep one cache."""
    table = SlotTable(4)
    first = await table.acquire(None)
    second = await _pending(table.acquire(None))
    assert not second.done()
    table.release(first)
    assert await asyncio.wait_for(second, 1) == first


def test_a_slot_released_twice_is_a_bug() -> None:
    table = SlotTable(1)
    slot = table.try_acquire("a")
    assert slot is not None
    table.release(slot)
    with pytest.raises(RuntimeError):
        table.release(slot)


async def test_a_provider_written_before_conversations_still_takes_the_keyword() -> None:
    """The pipeline passes ``conversation=`` to every LLM; a provider (or a plugin) that does
    not know the keyword keeps working, its end-of-turn scorer still awaitable."""
    import inspect
    from collections.abc import AsyncIterator

    from voice_agent.services.base import ChatMessage, LLMService

    class OldLLM(LLMService):
        def load(self) -> None:
            pass

        async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                         tools: object = None) -> AsyncIterator[str]:
            yield messages[-1].content

        def prefill(self, messages: list[ChatMessage]) -> bool:
            return True

        async def end_of_turn_probability(self, messages: list[ChatMessage]) -> float:
            return 0.5

    llm = OldLLM()
    said = [ChatMessage("user", "hi")]
    assert [p async for p in llm.stream(said, max_tokens=3, conversation="a")] == ["hi"]
    assert llm.prefill(said, conversation="a")
    assert inspect.iscoroutinefunction(llm.end_of_turn_probability)
    assert await llm.end_of_turn_probability(said, conversation="a") == 0.5
    async with llm.reserve(conversation="a"):
        pass
