"""Any OpenAI-compatible chat server (Groq, OpenAI, vLLM, llama.cpp's server, Ollama's /v1).

Streams `POST {base_url}/chat/completions` with `stream: true` (server-sent events). Closing the
iterator closes the HTTP response, which stops the remote generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx

from ..core.config import V3Config
from .base import ChatMessage, LLMService
from .errors import ProviderError

log = logging.getLogger(__name__)


class OpenAICompatibleLLM(LLMService):
    name = "openai"

    def __init__(self, config: V3Config) -> None:
        self.config = config.ai
        self._client: httpx.AsyncClient | None = None

    def load(self) -> None:
        """Nothing to load; the HTTP client is made on first use, in the event loop."""

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Content-Type": "application/json"}
            if self.config.api_key is not None:
                headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
            self._client = httpx.AsyncClient(
                base_url=self.config.base_url.rstrip("/"), headers=headers,
                timeout=httpx.Timeout(self.config.timeout_s, connect=min(5.0, self.config.timeout_s)))
        return self._client

    async def stream(self, messages: list[ChatMessage], *,
                     max_tokens: int | None = None) -> AsyncIterator[str]:
        body = {
            "model": self.config.remote_model,
            "messages": [m.as_dict() for m in messages],
            "max_tokens": max_tokens or self.config.max_tokens,
            "temperature": self.config.temperature,
            "stream": True,
        }
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
                        return
                    piece = _delta_text(data)
                    if piece:
                        yield piece
        except httpx.HTTPError as exc:
            # Never echo the request (it may carry the key): the class and URL are enough.
            raise ProviderError(self.name, f"{type(exc).__name__} talking to {self.config.base_url}") from None

    def close(self) -> None:
        self._client = None  # the AsyncClient is closed with its event loop


def _delta_text(data: str) -> str:
    try:
        chunk = json.loads(data)
        return chunk["choices"][0]["delta"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        log.debug("skipping a malformed stream chunk: %.80s", data)
        return ""
