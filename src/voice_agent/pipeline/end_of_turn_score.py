"""Asks the LLM how likely the words so far end the user's turn (the score EndOfTurnRule weighs).

A provider offers ``end_of_turn_probability`` or not (OpenAI, Groq: not): async for a model
server, blocking for the in-process model, which then runs in a thread and, with
``server.take_turns_on_cores``, in its turn on the cores. A provider that has the statement
check (chatml.statement_share) is asked for it at the rule's ``done_p``. What the provider takes
is read once, not at every pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from ..services.base import ChatMessage, LLMService

log = logging.getLogger("voice_agent.pipeline.agent")


class EndOfTurnScorer:
    def __init__(self, llm: LLMService, *, conversation: str | None,
                 statement_check_p: float | None = None,
                 cores: Callable[[], contextlib.AbstractAsyncContextManager[None]] = (
                     contextlib.nullcontext), session_id: str = "") -> None:
        """``statement_check_p``: the rule's done_p when the statement check is on (None:
        off); ``cores``: the turn on the cores a blocking score runs in."""
        self._score = getattr(llm, "end_of_turn_probability", None)
        self._async = inspect.iscoroutinefunction(self._score)
        self._kwargs: dict[str, Any] = {"conversation": conversation}
        if (self._score is not None and statement_check_p is not None
                and "statement_check_p" in inspect.signature(self._score).parameters):
            self._kwargs["statement_check_p"] = statement_check_p
        self._cores = cores
        self._session = session_id
        self._llm = llm

    @property
    def able(self) -> bool:
        """The model scores turns (a None from it means it was busy): the local model, or a
        server found to score (``scores_turns``; OpenAI or Groq cannot)."""
        return self._score is not None and bool(getattr(self._llm, "scores_turns", True))

    async def score(self, messages: list[ChatMessage], text: str = "") -> float | None:
        """The probability, or None when the model cannot tell (another provider, a reply
        holding the model, an error: a hint, not a turn; the fixed silence applies)."""
        p: float | None = None
        started = time.monotonic()
        if self._score is not None:
            try:
                if self._async:
                    p = await self._score(messages, **self._kwargs)
                else:  # local: not beside Whisper (services/priority_lock.py)
                    async with self._cores():
                        p = await asyncio.to_thread(self._score, messages, **self._kwargs)
            except Exception as exc:
                log.warning("[%s] end-of-turn score failed: %r", self._session, exc)
        log.debug("[%s] end-of-turn score of %r: %s in %.0f ms", self._session, text, p,
                  (time.monotonic() - started) * 1000)
        return p
