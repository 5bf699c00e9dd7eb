"""End of turn by meaning and prefill for ``ai.provider = "openai"``, when the server behind
``ai.base_url`` is llama.cpp's own (``voice-agent model-server``, or any llama-server) with a
ChatML model: the in-process provider's raw-prompt score and cache read-ahead
(services/llm_llamacpp.py, docs/end_of_turn.md), over llama.cpp's native endpoints beside its
``/v1`` ones. OpenAI, Groq, vLLM and the like have none of them: both stay off there.

Detection, once (at warm-up, or at first use when the server was not up then): ``GET
{root}/props`` (root: ``ai.base_url`` without its ``/v1``) must show a chat template with
``<|im_start|>``; ``POST {root}/apply-template`` must render a system and a user message as
:func:`chatml_prefix` writes them (a server without that endpoint is taken at its template's
word); ``POST {root}/tokenize`` gives ``<|im_end|>``'s id. A 404, another template or an answer
that is no JSON turns both off for good, logged once at INFO; a server that cannot be reached
(or refuses the key) is asked again after :data:`RETRY_S`.

Score: ``POST {root}/completion`` with the ChatML prompt up to the last user message's words,
``n_predict: 1, n_probs: 20, temperature: 0, cache_prompt: true``: the same numbers as the
in-process call, read by the same :func:`_end_probability`. Prefill: the same endpoint with
``n_predict: 0`` (llama.cpp reads the prompt and samples one token it does not send on) and
the prompt without the assistant's header (the in-process provider's docstring says why).

No slot is named (``id_slot``): the server does not know which worker's conversation a slot
holds. llama.cpp hands a request the idle slot whose cached prompt is most like it, so a
conversation's prefill, score and reply meet in one slot as long as they do not overlap: a
score or reply waits (bounded) for its conversation's prefill in flight, which reads a prefix
of its own prompt, instead of going to another slot to read it all again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from voice_agent.core.config import AIConfig
from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage
from voice_agent.services.chatml import (IM_END_QWEN, _end_probability, _plain,
                                         after_statement, as_statement, chatml_prefix,
                                         message_end_probability,
                                         single_token, statement_share, words_to_score)

log = logging.getLogger(__name__)

RETRY_S = 30.0
"""A server that could not be asked is asked again after this long (not on every call)."""
PROBE_TIMEOUT_S = 5.0
PREFILL_TIMEOUT_S = 10.0
"""A prefill still reading after this long is given up (its reply will read the rest)."""


def server_root(base_url: str) -> str:
    """``http://host:8080/v1`` → ``http://host:8080``: where llama.cpp's own endpoints are."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class RemoteTurns:
    """The end-of-turn score and prefills of one OpenAI-compatible provider; ``state`` says
    whether its server can do them: ``None`` (not known yet), True or False."""

    def __init__(self, provider: str, ai: AIConfig) -> None:
        self.provider = provider
        self.root = server_root(ai.base_url)
        self.headers = {"Content-Type": "application/json"}
        if ai.api_key is not None:
            self.headers["Authorization"] = f"Bearer {ai.api_key.get_secret_value()}"
        self.state: bool | None = None
        self.end_id = IM_END_QWEN
        self.tools: list[dict[str, Any]] | None = None
        """The tools of the last reply that had some: the chat template renders them into the
        system message, and so must our prompts, or the cache parts from the reply's there."""
        self.last_timings: Mapping[str, Any] = {}
        """llama.cpp's timings of the last score (prompt_n, cache_n, prompt_ms)."""
        self._asked_at = -RETRY_S
        self._detecting: asyncio.Future[bool | None] | None = None
        self._prefills: dict[str | None, asyncio.Task[None]] = {}
        self._waiting: dict[str | None, list[ChatMessage]] = {}
        self._blocks: dict[str, str | None] = {}
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- detection ----------------------------------------------------------------------------

    def detect(self, timeout: float = PROBE_TIMEOUT_S) -> bool | None:
        """Blocking: ask the server once what it can do (at warm-up, or from a thread)."""
        if self.state is not None or time.monotonic() - self._asked_at < RETRY_S:
            return self.state
        self._asked_at = time.monotonic()
        try:
            with httpx.Client(headers=self.headers, timeout=timeout) as client:
                props = client.get(f"{self.root}/props")
                if props.status_code in (401, 403) or props.status_code >= 500:
                    raise httpx.HTTPStatusError(f"HTTP {props.status_code}",
                                                request=props.request, response=props)
                reason = self._not_chatml(props)
                if reason is None:
                    reason = self._renders_otherwise(client.post(
                        f"{self.root}/apply-template", json={"messages": _PROBE}))
                if reason is None:
                    token = client.post(f"{self.root}/tokenize", json={
                        "content": "<|im_end|>", "add_special": False, "parse_special": True})
                    end_id = single_token(token.json().get("tokens")) if token.is_success \
                        else None
                    self.end_id = IM_END_QWEN if end_id is None else end_id
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.debug("%s: cannot ask %s what it serves (again in %.0f s): %r", self.provider,
                      self.root, RETRY_S, exc)
            return None
        self.state = reason is None
        if self.state:
            log.info("%s: %s is llama.cpp with a ChatML model: end of turn by meaning and "
                     "prefill on (<|im_end|> = %d)", self.provider, self.root, self.end_id)
        else:
            log.info("%s: no end of turn by meaning nor prefill with %s (%s): the turn ends "
                     "after the fixed silence", self.provider, self.root, reason)
        return self.state

    @staticmethod
    def _not_chatml(props: httpx.Response) -> str | None:
        if props.status_code == 404:
            return "no llama.cpp /props"
        if not props.is_success:
            return f"/props answered HTTP {props.status_code}"
        answer = props.json()
        template = answer.get("chat_template") if isinstance(answer, dict) else None
        if not isinstance(template, str) or "<|im_start|>" not in template:
            return "its chat template is not ChatML"
        return None

    @staticmethod
    def _renders_otherwise(rendered: httpx.Response) -> str | None:
        if rendered.status_code == 404:
            return None  # an older llama-server: the template's word is all there is
        prompt = rendered.json().get("prompt") if rendered.is_success else None
        if not isinstance(prompt, str) or not prompt.startswith(chatml_prefix(_PROBE_MESSAGES)):
            return "its chat template renders messages otherwise"
        return None

    async def ready(self) -> bool:
        """True when the server can score and prefill (asked in a thread, once, if need be)."""
        if self.state is None and (asking := self._ask()) is not None:
            await asyncio.shield(asking)
        return bool(self.state)

    def _ask(self) -> asyncio.Future[bool | None] | None:
        """The detection under way in this event loop, or a new one unless the server was
        asked less than :data:`RETRY_S` ago (None)."""
        loop = asyncio.get_running_loop()
        asking = self._detecting
        if asking is not None and not asking.done() and asking.get_loop() is loop:
            return asking
        if time.monotonic() - self._asked_at < RETRY_S:
            return None
        self._detecting = loop.create_task(asyncio.to_thread(self.detect))
        return self._detecting

    # -- requests -----------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:  # one per event loop (tests, CLI)
            self._client = httpx.AsyncClient(headers=self.headers, timeout=PREFILL_TIMEOUT_S)
            self._loop = loop
        return self._client

    async def _prompt(self, messages: list[ChatMessage]) -> str | None:
        """:func:`chatml_prefix`, with the tools' system block when replies have tools (the
        server's own rendering, asked once per system prompt); None when it cannot be had."""
        if not self.tools:
            return chatml_prefix(messages)
        if not messages or messages[0].role != "system":
            return None
        system = messages[0].content
        key = json.dumps([system, self.tools], sort_keys=True)
        if key not in self._blocks:
            try:
                answer = await self._http().post(f"{self.root}/apply-template", json={
                    "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": "x"}], "tools": self.tools})
                prompt = str(answer.json().get("prompt") or "") if answer.is_success else ""
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                log.debug("cannot render the tools' system block: %r", exc)
                return None  # asked again next time
            end = prompt.find("<|im_start|>user\n")
            ok = prompt.startswith(f"<|im_start|>system\n{system}") and end > 0
            self._blocks[key] = prompt[:end] if ok else None
        block = self._blocks[key]
        if block is None:
            return None
        return block + chatml_prefix(messages[1:]) if len(messages) > 1 else block

    async def end_of_turn_probability(self, messages: list[ChatMessage], *,
                                      keep_punctuation: bool = False, timeout: float = 2.0,
                                      conversation: str | None = None,
                                      statement_check_p: float | None = None) -> float | None:
        """:meth:`LlamaCppLLM.end_of_turn_probability` over HTTP. None when it cannot say:
        the server cannot score, the messages carry tool calls, no words are left, or no
        answer within ``timeout`` s (a busy server, like the local model's busy slot);
        ProviderError when the server fails."""
        scored = words_to_score(messages, keep_punctuation=keep_punctuation)
        if scored is None or not await self.ready():
            return None
        try:
            async with asyncio.timeout(timeout):
                prompt = await self._prompt(scored)
                if prompt is None:
                    return None
                # Its prefill reads this prompt's start, in the slot this would get.
                await self.prefilled(conversation, timeout)
                answer = await self._one_token(prompt)
                p = _end_probability(answer, self.end_id, punctuation_ends=not keep_punctuation)
                period = 0.0 if keep_punctuation else statement_share(answer, p,
                                                                      statement_check_p)
                follow = await self._prompt(as_statement(scored)) if period else None
                if follow is not None:  # a statement: does the message end after it?
                    ends = message_end_probability(await self._one_token(follow), self.end_id)
                    p = after_statement(p, period, ends)
        except (TimeoutError, httpx.TimeoutException):
            log.debug("%s: no end-of-turn score within %.1f s", self.provider, timeout)
            return None
        except httpx.HTTPError as exc:  # never the request: it may carry the key
            raise ProviderError(self.provider, f"end-of-turn probability failed: "
                                f"{type(exc).__name__} talking to {self.root}") from None
        return p

    async def _one_token(self, prompt: str) -> Mapping[str, Any]:
        """``/completion`` of one token with its top 20 probabilities."""
        body = {"prompt": prompt, "n_predict": 1, "n_probs": 20, "temperature": 0.0,
                "stream": False, "cache_prompt": True}
        response = await self._http().post(f"{self.root}/completion", json=body)
        if not response.is_success:
            raise ProviderError(self.provider, f"end-of-turn probability failed: HTTP "
                                f"{response.status_code}: {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, Mapping) or "error" in answer:
            error = answer.get("error") if isinstance(answer, Mapping) else response.text[:200]
            raise ProviderError(self.provider, f"end-of-turn probability failed: {error}")
        self.last_timings = dict(answer.get("timings") or {})
        return answer

    def prefill(self, messages: list[ChatMessage], *, conversation: str | None = None) -> bool:
        """Read ``messages`` into the server's cache in the background (fire and forget).
        One read per conversation at a time: later ones wait, and only the newest waiting is
        kept (it contains the others). Not cancelled: llama.cpp reads a prompt to its end
        even once the request's connection is closed (measured: a dropped 1,950-token read
        held its slot 14.7 s more), so a newer read sent beside it would take a second slot
        to read the same words. False when nothing is started: the server cannot (or is not
        known yet to: it is asked meanwhile), tool calls in the messages, no event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self.state is not True:
            if self.state is None:
                self._ask()
            return False
        if not _plain(messages):
            return False
        self._waiting[conversation] = list(messages)
        running = self._prefills.get(conversation)
        if running is None or running.done() or running.get_loop() is not loop:
            self._prefills[conversation] = loop.create_task(self._prefill(conversation),
                                                            name="llm-prefill")
        return True

    async def _prefill(self, conversation: str | None) -> None:
        try:
            while (messages := self._waiting.pop(conversation, None)) is not None:
                await self._read(messages)
        finally:
            if self._prefills.get(conversation) is asyncio.current_task():
                del self._prefills[conversation]

    async def _read(self, messages: list[ChatMessage]) -> None:
        try:
            prompt = await self._prompt(messages)
            if prompt is None:
                return
            body = {"prompt": prompt, "n_predict": 0, "stream": False, "cache_prompt": True}
            response = await self._http().post(f"{self.root}/completion", json=body)
            if not response.is_success:
                log.debug("prefill: HTTP %d: %.200s", response.status_code, response.text)
        except Exception as exc:  # only a cache warm-up: the reply will say what is wrong
            log.debug("prefill failed: %r", exc)

    async def prefilled(self, conversation: str | None, timeout: float, *,
                        drop: bool = True) -> None:
        """Wait, at most ``timeout`` s, for ``conversation``'s prefill in flight, if any.
        ``drop``: those not sent yet are dropped (the caller reads their words itself);
        else they are waited for too."""
        if drop:
            self._waiting.pop(conversation, None)
        task = self._prefills.get(conversation)
        if task is not None and not task.done() and timeout > 0 \
                and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({task}, timeout=timeout)

    def close(self) -> None:
        for task in self._prefills.values():
            task.cancel()
        self._prefills.clear()
        self._waiting.clear()
        self._client = None  # the AsyncClient is closed with its event loop


_PROBE_MESSAGES = [ChatMessage("system", "You are a voice assistant."),
                   ChatMessage("user", "Hello there")]
_PROBE = [m.as_dict() for m in _PROBE_MESSAGES]
