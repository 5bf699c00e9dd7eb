"""One reply of the local LLM (services/llm_llamacpp.py) in its llama.cpp slot, blocking: the
streamed chunks handed on piece by piece until done or stopped, what the reply cost, and the
first-token probe that tells whether the reply is likely a tool call.

A mixin of :class:`~voice_agent.services.llm_llamacpp.LlamaCppLLM`, which runs these in the
reply's own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage
from voice_agent.services.llm_slots import SlotTable
from voice_agent.services.tool_text import _TOP_LOGPROBS, _call_chance

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger("voice_agent.services.llm_llamacpp")

UNCACHED_PROMPT_TOKENS = 100
"""A reply that reads this many prompt tokens (not in its slot's cache) is logged at INFO: a
new question is 10-30, a history read again hundreds."""


@dataclass(slots=True)
class GenerationStats:
    """What the last reply cost; ``stop_latency_s`` is set when it was cancelled."""

    first_token_s: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    cached_prompt_tokens: int | None = None
    prompt_tokens: int | None = None
    """Prompt tokens read for this reply (those not found in the slot's cache)."""
    prompt_ms: float | None = None
    slot: int | None = None
    stop_latency_s: float | None = None
    """From the stop request to llama.cpp returning (the model is free again)."""


class LlamaCppGeneration:
    """The blocking reply of :class:`LlamaCppLLM` (see the module's docstring)."""

    name: str
    _server: xllamacpp.Server | None
    slots: SlotTable
    last_stats: GenerationStats
    _request: Callable[..., dict[str, Any]]  # LlamaCppPrompts._request

    def _generate(self, messages: list[ChatMessage], max_tokens: int, stop: _StopEvent,
                  emit: Callable[[str], None],
                  tools: Sequence[Mapping[str, Any]] | None = None,
                  tool_calls: list[dict[str, Any]] | None = None,
                  call_threshold: float | None = None) -> bool:
        """Blocking: run one reply in ``stop.slot``, calling ``emit(text)`` per piece, until
        done or ``stop``. With ``tools``, the fragments of the calls llama.cpp parsed are
        appended to ``tool_calls``. With ``call_threshold``: True, nothing emitted, when the
        first token did not start a tool call but the tokens that would have were at least
        that likely together (see ``ToolsConfig.local_call_threshold``)."""
        slot = stop.slot
        stats = GenerationStats(slot=slot)
        errors: list[str] = []
        t0 = time.perf_counter()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if stop.is_set():
                return True
            if "error" in chunk:
                err = chunk["error"]
                errors.append(err.get("message", str(err)) if isinstance(err, dict) else str(err))
                return True
            for choice in chunk.get("choices", ()):
                delta = choice.get("delta") or {}
                if tool_calls is not None and isinstance(delta.get("tool_calls"), list):
                    tool_calls.extend(delta["tool_calls"])
                    if stats.first_token_s is None:
                        stats.first_token_s = time.perf_counter() - t0
                        self.slots.started(slot)
                piece = delta.get("content")
                if piece:
                    if stats.first_token_s is None:
                        stats.first_token_s = time.perf_counter() - t0
                        self.slots.started(slot)  # side jobs may run beside it now
                    stats.tokens += 1
                    emit(piece)
            timings = chunk.get("timings")
            if timings:
                stats.tokens_per_s = timings.get("predicted_per_second")
                stats.cached_prompt_tokens = timings.get("cache_n")
                stats.prompt_tokens = timings.get("prompt_n")
                stats.prompt_ms = timings.get("prompt_ms")
            return stop.is_set()

        if stop.is_set():  # cancelled before it started: never start
            return
        server = self._server
        if server is None:
            raise ProviderError(self.name, "model not loaded", retryable=False)
        request = self._request(messages, max_tokens, slot, tools)
        if call_threshold is not None and self._call_likely(server, request, call_threshold):
            return True
        try:
            server.handle_chat_completions(request, on_chunk)
        except Exception as exc:
            raise ProviderError(self.name, f"generation failed: {exc}") from exc
        finally:
            if stop.is_set() and stats.stop_latency_s is None:
                stop_at = getattr(stop, "at", None)
                if stop_at is not None:
                    stats.stop_latency_s = time.perf_counter() - stop_at
            self.last_stats = stats
            if (stats.prompt_tokens or 0) >= UNCACHED_PROMPT_TOKENS:
                # A conversation's history read again (its slot's cache was lost) holds
                # every other slot's next token for as long: worth seeing at INFO.
                log.info("slot %s: %s prompt tokens read in %s ms (%s cached)", slot,
                         stats.prompt_tokens, stats.prompt_ms and round(stats.prompt_ms),
                         stats.cached_prompt_tokens)
            log.debug("slot %s: prompt %s tokens read in %s ms (%s cached), first token "
                      "after %s s, %d tokens at %s/s", slot, stats.prompt_tokens,
                      stats.prompt_ms and round(stats.prompt_ms), stats.cached_prompt_tokens,
                      stats.first_token_s and round(stats.first_token_s, 3), stats.tokens,
                      stats.tokens_per_s and round(stats.tokens_per_s, 1))
        if errors:
            raise ProviderError(self.name, errors[0], retryable=False)
        return False

    def _call_likely(self, server: xllamacpp.Server, request: dict[str, Any],
                     threshold: float) -> bool:
        """Blocking: the reply's first token alone (llama.cpp gives no logprobs for a
        streamed reply with tools), with its alternatives: True when the tokens that start a
        tool call are ``threshold`` likely together. The prompt it reads stays in the slot's
        cache for the reply; the token costs ~70 ms on 2 cores."""
        probe = {**request, "stream": False, "max_tokens": 1, "logprobs": True,
                 "top_logprobs": _TOP_LOGPROBS}
        try:
            response = server.handle_chat_completions(probe)
            choice = response["choices"][0]
            first = (choice.get("message") or {}).get("content") or ""
            chance = 1.0 if (choice.get("message") or {}).get("tool_calls") else \
                _call_chance(choice)
        except Exception as exc:  # only a hint: the reply itself says what is wrong
            log.debug("tool-call probe failed: %r", exc)
            return False
        log.debug("tool call chance %.3f (first token %r)", chance, first)
        return chance >= threshold


class _StopEvent(threading.Event):
    """A reply's stop flag, which remembers when it was first set (for the stop-latency
    measurement), and the slot the reply runs in."""

    at: float | None = None

    def __init__(self, slot: int) -> None:
        super().__init__()
        self.slot = slot

    def set(self) -> None:
        if self.at is None:
            self.at = time.perf_counter()
        super().set()
