"""Groq: ``ai.provider = "groq"``, a preset of the OpenAI-compatible adapter (llm_openai.py).

Groq serves the OpenAI chat API at ``https://api.groq.com/openai/v1`` with a bearer key, so this
is the same adapter with Groq's root and a default model, used unless ``ai.base_url`` /
``ai.remote_model`` are set; the key (``ai.api_key``) is required. At start-up (warm-up) the key
is checked once with ``GET {base_url}/models``, which costs no tokens: a rejected key fails the
start with a message naming ``VOICE_AGENT_AI__API_KEY``; an unreachable server only warns. A key
rejected later (HTTP 401/403 on a reply) is a non-retryable error saying the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from voice_agent.core.config import ConfigError, V3Config
from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage, LLMStreamItem
from voice_agent.services.llm_openai import OpenAICompatibleLLM
from voice_agent.services.openai_audio import check_key

GROQ_BASE_URL = "https://api.groq.com/openai/v1"
GROQ_DEFAULT_MODEL = "llama-3.3-70b-versatile"
KEY_HINT = "ai.api_key, env VOICE_AGENT_AI__API_KEY"


class GroqLLM(OpenAICompatibleLLM):
    name = "groq"

    def __init__(self, config: V3Config) -> None:
        ai = config.ai
        if ai.api_key is None:
            raise ConfigError('ai.provider = "groq" needs an API key: set ai.api_key '
                              "(env VOICE_AGENT_AI__API_KEY)")
        preset: dict[str, Any] = {}
        if "base_url" not in ai.model_fields_set:  # the shared default is a local server's
            preset["base_url"] = GROQ_BASE_URL
        if "remote_model" not in ai.model_fields_set:
            preset["remote_model"] = GROQ_DEFAULT_MODEL
        super().__init__(config.model_copy(update={"ai": ai.model_copy(update=preset)}))
        self.turns.state = False  # a cloud API, never llama.cpp's server: nothing to ask

    def warmup(self) -> None:
        check_key(self.name, f"{self.config.base_url.rstrip('/')}/models",
                  self.config.api_key, KEY_HINT, timeout_s=min(10.0, self.config.timeout_s))

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                     tools: Sequence[Mapping[str, Any]] | None = None,
                     ) -> AsyncIterator[LLMStreamItem]:
        try:
            # aclosing: closing this stream closes the adapter's HTTP response at once.
            async with aclosing(super().stream(messages, max_tokens=max_tokens,
                                               tools=tools)) as stream:
                async for item in stream:
                    yield item
        except ProviderError as exc:
            # The adapter says "HTTP 401: <body>"; say which setting to fix as well.
            if not exc.retryable and any(f"HTTP {s}" in str(exc) for s in (401, 403)):
                raise ProviderError(self.name, f"the API key was rejected ({str(exc)[:200]}): "
                                    f"check {KEY_HINT}", retryable=False) from None
            raise
