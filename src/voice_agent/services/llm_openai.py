"""Any OpenAI-compatible chat server (Groq, OpenAI, vLLM, llama.cpp's server, Ollama's /v1).

Streams `POST {base_url}/chat/completions` with `stream: true` (server-sent events). Closing the
iterator closes the HTTP response, which stops the remote generation.

Tool calls arrive in fragments, as OpenAI documents for streaming: each chunk's
``choices[0].delta.tool_calls`` is a list of ``{index, id?, type?, function: {name?,
arguments?}}``; the first fragment of a call brings its ``id`` and ``name``, the following ones
pieces of its ``arguments`` JSON, and parallel calls are told apart by ``index``. They are
assembled here and yielded as complete :class:`ToolCall` items once the stream ends, after the
text: a half-written call is of no use to anyone.

Against llama.cpp's own server with a ChatML model (``voice-agent model-server``), it also
scores the end of the user's turn and prefills while they speak, as the in-process model does;
elsewhere both stay off (services/llm_remote_turn.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..core.config import V3Config
from ..core.errors import ProviderError
from ..core.messages import ChatMessage, LLMStreamItem, ToolCall
from .base import LLMService
from .llm_remote_turn import PREFILL_TIMEOUT_S, PROBE_TIMEOUT_S, RemoteTurns

log = logging.getLogger(__name__)


class OpenAICompatibleLLM(LLMService):
    name = "openai"

    def __init__(self, config: V3Config) -> None:
        self.config = config.ai
        self._client: httpx.AsyncClient | None = None
        self.turns = RemoteTurns(self.name, self.config)
        """End-of-turn scores and prefills, when the server is llama.cpp's with ChatML."""

    def load(self) -> None:
        """Nothing to load; the HTTP client is made on first use, in the event loop."""

    def warmup(self) -> None:
        """Ask the server whether it can score turns and prefill (asked at first use
        instead when it cannot be reached now)."""
        self.turns.detect(min(PROBE_TIMEOUT_S, self.config.timeout_s))

    async def end_of_turn_probability(self, messages: list[ChatMessage], *,
                                      keep_punctuation: bool = False, timeout: float = 2.0,
                                      conversation: str | None = None,
                                      statement_check_p: float | None = None) -> float | None:
        """As :meth:`LlamaCppLLM.end_of_turn_probability`, over llama.cpp's ``/completion``;
        None where the server cannot (OpenAI, Groq, vLLM, a model without ChatML)."""
        return await self.turns.end_of_turn_probability(
            messages, keep_punctuation=keep_punctuation, timeout=timeout,
            conversation=conversation, statement_check_p=statement_check_p)

    @property
    def scores_turns(self) -> bool:
        """Whether this server scores turns (llama.cpp's own does; unknown until asked counts
        as yes)."""
        return self.turns.state is not False

    @property
    def last_end_of_turn_timings(self) -> Mapping[str, Any]:
        """llama.cpp's timings of the last end-of-turn score (prompt_n, cache_n, prompt_ms)."""
        return self.turns.last_timings

    def prefill(self, messages: list[ChatMessage], *, conversation: str | None = None) -> bool:
        """Read ``messages`` into the server's prompt cache in the background, where it can
        (see :meth:`RemoteTurns.prefill`); False elsewhere."""
        return self.turns.prefill(messages, conversation=conversation)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Content-Type": "application/json"}
            if self.config.api_key is not None:
                headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
            self._client = httpx.AsyncClient(
                base_url=self.config.base_url.rstrip("/"), headers=headers,
                timeout=httpx.Timeout(self.config.timeout_s, connect=min(5.0, self.config.timeout_s)))
        return self._client

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                     tools: Sequence[Mapping[str, Any]] | None = None,
                     conversation: str | None = None) -> AsyncIterator[LLMStreamItem]:
        if tools:  # the template renders them into the system message: prefills must too
            self.turns.tools = [dict(tool) for tool in tools]
        # The conversation's prefill in flight reads this prompt's start in the slot this
        # reply would get; sent beside it, the reply would read it all again in another.
        await self.turns.prefilled(conversation, min(PREFILL_TIMEOUT_S, self.config.timeout_s))
        body: dict[str, Any] = {
            "model": self.config.remote_model,
            "messages": [m.as_dict() for m in messages],
            "max_tokens": max_tokens or self.config.max_tokens,
            "temperature": self.config.temperature,
            "stream": True,
        }
        if tools:  # never an empty list: OpenAI refuses `tools: []`
            body["tools"] = [dict(tool) for tool in tools]
        calls = _ToolCalls()
        try:
            async with self._http().stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    detail = (await resp.aread()).decode(errors="replace")[:200]
                    # 4xx other than 429 will not get better by retrying (bad key, bad model).
                    retryable = resp.status_code >= 500 or resp.status_code == 429
                    raise ProviderError(self.name, f"HTTP {resp.status_code}: {detail}",
                                        retryable=retryable)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments and keep-alives
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    delta = _delta(data)
                    piece = delta.get("content")
                    if piece and isinstance(piece, str):
                        yield piece
                    fragments = delta.get("tool_calls")
                    if fragments:
                        calls.add(fragments)
        except httpx.HTTPError as exc:
            # Never echo the request (it may carry the key): the class and URL are enough.
            raise ProviderError(self.name, f"{type(exc).__name__} talking to {self.config.base_url}") from None
        # Outside the HTTP block: the response is closed before the caller runs any tool.
        for call in calls.complete(self.name):
            yield call

    def close(self) -> None:
        self._client = None  # the AsyncClient is closed with its event loop
        self.turns.close()


def _delta(data: str) -> dict[str, Any]:
    """The chunk's ``choices[0].delta``; empty for a malformed chunk or one without choices
    (some servers end with a usage-only chunk)."""
    try:
        delta = json.loads(data)["choices"][0]["delta"]
    except (ValueError, KeyError, IndexError, TypeError):
        log.debug("skipping a malformed stream chunk: %.80s", data)
        return {}
    return delta if isinstance(delta, dict) else {}


@dataclass(slots=True)
class _Fragments:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _ToolCalls:
    """Assembles streamed tool-call fragments by their ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, _Fragments] = {}

    def add(self, fragments: object) -> None:
        if not isinstance(fragments, list):
            return
        for position, fragment in enumerate(fragments):
            if not isinstance(fragment, dict):
                continue
            # Some servers (Ollama) send whole calls without an index: their place in the list
            # is then the only order there is.
            index = fragment.get("index", position)
            call = self._calls.setdefault(index if isinstance(index, int) else position,
                                          _Fragments())
            if isinstance(fragment.get("id"), str) and not call.id:
                call.id = fragment["id"]  # the first fragment's id names the call
            function = fragment.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    call.name += function["name"]
                if isinstance(function.get("arguments"), str):
                    call.arguments.append(function["arguments"])

    def complete(self, provider: str) -> list[ToolCall]:
        """The calls in index order. A call without a name cannot be run: the stream was cut
        or the server is broken, and a retry may fare better."""
        out = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.name:
                raise ProviderError(provider, f"tool call {index} arrived without a name")
            # A call without parameters may come with no arguments at all: "{}" is what it means.
            arguments = "".join(call.arguments) or "{}"
            out.append(ToolCall(call.id or f"call_{index}", call.name, arguments))
        return out
