"""What the local LLM (services/llm_llamacpp.py) sends llama.cpp: the chat request of a reply
or a prefill, with the tools every prompt of a conversation renders alike; the raw ChatML prompt
of a prefill or an end-of-turn score, with the tools' system block as the model's template
renders it; and the raw read of a prompt into a slot's cache.

A mixin of :class:`~voice_agent.services.llm_llamacpp.LlamaCppLLM`, which sets the attributes
declared here (the loaded server, its loopback key, the tools of the last reply with some).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage
from voice_agent.services.chatml import _plain, chatml_prefix
from voice_agent.services.tool_text import _CALL_STARTS

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger("voice_agent.services.llm_llamacpp")


class LlamaCppPrompts:
    """The prompts and raw cache reads of :class:`LlamaCppLLM` (see the module's docstring)."""

    name: str
    _config: V3Config
    _server: xllamacpp.Server | None
    http_key: str
    tools: list[dict[str, Any]] | None
    _system_blocks: dict[str, str | None]

    def _request(self, messages: list[ChatMessage], max_tokens: int, slot: int,
                 tools: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        request = {
            "messages": [m.as_dict() for m in messages],
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": self._config.ai.temperature,
            "cache_prompt": True,
            "id_slot": slot,
        }
        if tools:  # the template renders them; llama.cpp parses the calls it recognises
            request["tools"] = [dict(tool) for tool in tools]
        elif self.tools and _plain(messages):
            # A prefill (or any plain prompt) without them would differ from the replies'
            # right after the system prompt, and the slot's cache would be read again from
            # there each turn: they are rendered, and calls are ruled out. Not for the answer
            # after tool results: with the tools rendered (calls ruled out) the 1.5B model
            # answered 8 of 10 questions with the tool's fact, without them 10 of 10.
            request["tools"] = self.tools
            request["logit_bias"] = [[text, False] for text in _CALL_STARTS]
        return request

    def _chatml(self, messages: list[ChatMessage]) -> str | None:
        """:func:`chatml_prefix`, with the tools' system block when replies have tools (as
        the template renders it, asked of llama.cpp once); None when it cannot be had."""
        if not self.tools:
            return chatml_prefix(messages)
        if not messages or messages[0].role != "system":
            return None
        block = self._system_block(messages[0].content)
        if block is None:
            return None
        return block + chatml_prefix(messages[1:]) if len(messages) > 1 else block

    def _system_block(self, system: str) -> str | None:
        """The template's rendering of ``system`` with :attr:`tools`, up to the first user
        message (the in-process server's /apply-template on loopback)."""
        key = json.dumps([system, self.tools], sort_keys=True)
        if key in self._system_blocks:
            return self._system_blocks[key]
        block = None
        server = self._server
        try:
            if server is None:
                raise RuntimeError("model not loaded")
            request = urllib.request.Request(
                f"{server.listening_address}/apply-template",
                data=json.dumps({"messages": [{"role": "system", "content": system},
                                              {"role": "user", "content": "x"}],
                                 "tools": self.tools}).encode(),
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {self.http_key}"})
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                prompt = str(json.loads(response.read()).get("prompt") or "")
            end = prompt.find("<|im_start|>user\n")
            if prompt.startswith(f"<|im_start|>system\n{system}") and end > 0:
                block = prompt[:end]
        except Exception as exc:
            log.debug("cannot render the tools' system block: %r", exc)
            return None  # asked again next time
        self._system_blocks[key] = block
        return block

    def _read_raw(self, prompt: str, slot: int) -> int:
        """Blocking: read ``prompt`` into ``slot``'s cache, generate nothing; returns the
        prompt's length in tokens (0 if llama.cpp refused it)."""
        timings: dict[str, Any] = {}

        def on_chunk(chunk: dict[str, Any]) -> bool:
            timings.update(chunk.get("timings") or {})
            return False

        server = self._server
        if server is None:
            raise ProviderError(self.name, "model not loaded", retryable=False)
        request = {"prompt": prompt, "n_predict": 0, "stream": True, "cache_prompt": True,
                   "id_slot": slot}
        try:
            server.handle_completions(request, on_chunk)
        except Exception as exc:  # only a cache warm-up: the reply will say what is wrong
            log.debug("raw prefill failed: %r", exc)
        return int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0))
