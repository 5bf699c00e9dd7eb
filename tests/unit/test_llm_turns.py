"""The local LLM's turn is handed on only when its thread has let go of the model.

A reply cut while llama.cpp works ends at once, but its generation thread runs on to the next
token. Handing the turn on then started the next reply's thread beside it: a flood of typed
messages left up to 209 threads waiting on the model's (unfair) threading lock. Here llama.cpp
is replaced by a blocking function, so no model is needed.
"""

from __future__ import annotations

import asyncio
import threading

from voice_agent.core.config import V3Config
from voice_agent.services.llm_llamacpp import LlamaCppLLM


class BlockingModel:
    """Stands in for ``_generate``: one piece, then holds the model until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self._count = threading.Lock()

    def __call__(self, messages, max_tokens, stop, emit, *_tools) -> None:  # noqa: ANN001
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            emit("Hello")
            self.release.wait(5)  # llama.cpp reading a prompt: deaf to the stop flag
        finally:
            with self._count:
                self.running -= 1


async def test_a_cut_reply_keeps_the_turn_until_its_thread_returns() -> None:
    llm = LlamaCppLLM(V3Config())
    model = BlockingModel()
    llm._generate = model  # type: ignore[method-assign]
    got_piece = asyncio.Event()

    async def reply() -> None:
        async with llm.reserve():
            async for _piece in llm.stream([]):
                got_piece.set()

    first = asyncio.create_task(reply())
    await got_piece.wait()
    first.cancel()  # barge-in: the reply's task ends at once
    await asyncio.gather(first, return_exceptions=True)
    second_got_turn = asyncio.Event()

    async def next_reply() -> None:
        async with llm.reserve():
            second_got_turn.set()

    second = asyncio.create_task(next_reply())
    await asyncio.sleep(0.2)
    assert not second_got_turn.is_set(), "the turn went on while the model was still busy"
    model.release.set()  # llama.cpp returns
    async with asyncio.timeout(2):
        await second
    assert second_got_turn.is_set()


async def test_a_flood_of_cut_replies_never_runs_two_threads() -> None:
    llm = LlamaCppLLM(V3Config())
    model = BlockingModel()
    llm._generate = model  # type: ignore[method-assign]

    async def reply() -> None:
        async with llm.reserve():
            async for _piece in llm.stream([]):
                pass

    tasks = []
    for _ in range(30):
        tasks.append(asyncio.create_task(reply()))
        await asyncio.sleep(0.01)
        tasks[-1].cancel()
    await asyncio.sleep(0.1)
    model.release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    async with asyncio.timeout(2):  # the turn is free again in the end
        async with llm.reserve():
            pass
    assert model.most == 1
