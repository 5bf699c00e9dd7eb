"""A GGUF model run in-process by llama.cpp (xllamacpp), streamed token by token.

``Server.handle_chat_completions`` blocks until the reply is done, calling back with each chunk;
the callback returning True stops generation. Each reply runs in its own thread (not the shared
to_thread pool, which several waiting sessions could exhaust) and hands pieces to the event loop.
One model copy serves every session through ``ai.parallel_slots`` llama.cpp slots, batched
together: that many replies are written at once, the rest wait their turn in the event loop
(``reserve``). Each conversation keeps to its own slot while it can (``llm_slots.SlotTable``), so
its history stays cached between turns; warm-up reads the system prompt into every slot.
Measured with Qwen 1.5B on 2 cores (docs/latency.md): four conversations at once all see
their first token within ~0.5-1 s instead of one after another; the total tokens/s is about
the same (compute-bound), each stream slower, still faster than speech.

A prefill (the user's words so far, read while they still speak) goes through the chat endpoint
only if the model's template is not ChatML: the chat template ends every prompt with the
assistant's header (5 tokens, ~150 ms of prompt reading here), which the next prefill throws
away. With ChatML, checked once at warm-up, the prefill is the rendered prompt without that
tail, sent as a raw completion: half the work, and the same cached tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import secrets
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage, LLMStreamItem
from voice_agent.core.priority import lower_thread_priority
from voice_agent.services.base import LLMService
from voice_agent.services.chatml import (IM_END_QWEN, _end_probability, _plain, _token_id,
                                         chatml_prefix, words_to_score)
from voice_agent.services.llm_slots import SlotHold, SlotTable
from voice_agent.services.models import model_path
from voice_agent.services.tool_text import (_CALL_START, _CALL_STARTS, _TOP_LOGPROBS,
                                            ToolCallText, _call_chance, _parsed_calls,
                                            _tool_names)

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GenerationStats:
    """What the last reply cost; ``stop_latency_s`` is set when it was cancelled."""

    first_token_s: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    cached_prompt_tokens: int | None = None
    slot: int | None = None
    stop_latency_s: float | None = None
    """From the stop request to llama.cpp returning (the model is free again)."""


class _Done:
    """End-of-stream marker put on the queue by the worker thread."""


_DONE = _Done()

_held: contextvars.ContextVar[SlotHold | None] = contextvars.ContextVar("llm_slot", default=None)
"""The slot :meth:`LlamaCppLLM.reserve` holds for the code inside it (its :meth:`stream`)."""


class LlamaCppLLM(LLMService):
    name = "llamacpp"
    continues_replies = True  # llama.cpp reads a last assistant message as the reply's start

    def __init__(self, config: V3Config) -> None:
        self._config = config
        self._server: xllamacpp.Server | None = None
        self.http_key = ""
        """The key of the in-process server's loopback HTTP listener (set at load)."""
        self.slots = SlotTable(config.ai.parallel_slots)
        self._threads = threading.Condition()  # counts model threads not yet returned
        self._running = 0
        self.path: Path | None = None
        self.last_stats = GenerationStats()
        """The last reply to end (with several slots, whichever that was)."""
        self.raw_prefill = False
        """Prefills send the ChatML prompt without its tail (set by warmup if the model's
        template renders the same tokens)."""
        self.tools: list[dict[str, Any]] | None = None
        """The tools of the last reply that had some: every later prompt renders them too
        (see :meth:`_request`), so that all of a conversation's prompts start alike."""
        self._system_blocks: dict[str, str | None] = {}

    # -- life cycle ---------------------------------------------------------------------------

    def load(self) -> None:
        import xllamacpp

        ai = self._config.ai
        self.path = model_path(self._config, "llm", prepare_missing=True)
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        # llama.cpp splits n_ctx evenly between the slots (kv_unified off): each conversation
        # keeps ai.context_size, as with one slot. KV memory grows with the slots (Qwen 1.5B,
        # f16: 28 KiB a token, 224 MiB for 4 x 2048).
        params.n_parallel = self.slots.size
        params.n_ctx = ai.context_size * self.slots.size
        params.kv_unified = False
        params.cpuparams.n_threads = ai.threads
        params.cpuparams_batch.n_threads = ai.threads
        params.use_jinja = True  # the GGUF's own chat template
        params.cache_prompt = True
        params.cache_ram_mib = ai.prompt_cache_mib  # bounded: see AIConfig.prompt_cache_mib
        params.verbosity = 0  # llama.cpp is chatty on stderr otherwise
        # xllamacpp's server also listens on a random loopback port, open to any local process
        # (and to a web page that finds the port): a random key closes it; the in-process calls
        # do not go through it.
        self.http_key = secrets.token_urlsafe(24)
        params.api_keys = [self.http_key]
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise ProviderError(self.name, f"cannot load {self.path}: {exc}",
                                retryable=False) from exc

    def warmup(self) -> None:
        """One short reply after the system prompt in each slot, which leaves that prompt in
        every slot's KV cache (a slot does not borrow another's: a cold one re-reads it). Slot
        0 reads it first as a raw ChatML prefix: if the reply then finds all of it cached, the
        model's own template is ChatML and prefills can skip the template's tail."""
        msgs = [ChatMessage("system", self._config.ai.system_prompt), ChatMessage("user", "Hi")]
        raw = self._read_raw(chatml_prefix(msgs), 0)
        self._generate(msgs, 2, _StopEvent(0), lambda _piece: None)
        cached = self.last_stats.cached_prompt_tokens or 0
        self.raw_prefill = raw > 0 and cached >= raw
        log.debug("prefill as raw ChatML: %s (%d of %d tokens reused)", self.raw_prefill,
                  cached, raw)
        for slot in range(1, self.slots.size):
            if self.raw_prefill:
                self._read_raw(chatml_prefix(msgs), slot)
            else:
                self._generate(msgs, 1, _StopEvent(slot), lambda _piece: None)

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

    def close(self) -> None:
        # A reply's thread keeps its own reference to the server: dropping ours does not pull
        # the model from under it, but a reply about to end should end first.
        self.wait_idle(5.0)
        self._server = None  # the Server frees the model when its last reference goes

    def wait_idle(self, timeout: float) -> bool:
        """Block until no reply or prefill thread is running (True), or ``timeout`` passes
        (False). An end-of-turn score runs in its caller's thread, not counted here."""
        with self._threads:
            return self._threads.wait_for(lambda: not self._running, timeout)

    def _start(self, work: Callable[[], None], name: str) -> None:
        """Run ``work`` in a thread of its own (not the shared to_thread pool, which several
        waiting sessions could exhaust), counted for :meth:`wait_idle`."""
        def run() -> None:
            try:
                work()
            finally:
                with self._threads:
                    self._running -= 1
                    self._threads.notify_all()

        with self._threads:
            self._running += 1
        threading.Thread(target=run, name=name, daemon=True).start()

    # -- generation ---------------------------------------------------------------------------

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

    @property
    def waiting(self) -> int:
        """Replies waiting for a free slot (not those being written beside each other)."""
        return self.slots.waiting

    @contextlib.asynccontextmanager
    async def reserve(self, *, conversation: str | None = None) -> AsyncIterator[None]:
        """A slot for one reply in ``conversation`` (its own slot if it still has one), first
        come first served when all are busy; :meth:`stream` inside uses it.

        The slot is handed on when the model is really done with it: a reply cut while
        llama.cpp still works (reading the prompt, or up to its next token) ends at once, but
        its thread holds the slot a little longer. Handing the slot on then would start the
        next reply's thread beside it, to wait inside llama.cpp instead of in the event loop:
        45 typed messages a second on one socket once left up to 209 such threads, and another
        session's reply waited 4.4 s instead of 0.9 s."""
        hold = SlotHold(self.slots, await self.slots.acquire(conversation))
        token = _held.set(hold)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):  # left in another context: nothing to undo
                _held.reset(token)
            hold.done()

    def prefill(self, messages: list[ChatMessage], *, conversation: str | None = None) -> bool:
        """Read ``messages`` into ``conversation``'s slot in a background thread. Nothing is
        started (False) while a reply waits for a slot or its first token, while that slot is
        busy (a reply or the last prefill), or when no slot is free: a prefill never makes
        another session's reply wait for more than a prompt read already under way. It may run
        beside other conversations' replies, which it slows while it reads."""
        server = self._server
        if server is None:
            return False
        slot = self.slots.try_acquire(conversation)
        if slot is None:
            return False
        request = self._request(messages, 1, slot)  # one token: llama.cpp reads, then stops
        # A raw ChatML prefix renders role and content only; the model's template renders tool
        # calls and results its own way, so with those the prefix would not match the prompt.
        prefix = self._chatml(messages) if self.raw_prefill and _plain(messages) else None

        def work() -> None:
            lower_thread_priority(self._config.server.model_threads_nice)
            try:
                if prefix is not None:
                    self._read_raw(prefix, slot)
                else:
                    server.handle_chat_completions(request, lambda _chunk: False)
            except Exception as exc:  # only a cache warm-up: the reply will say what is wrong
                log.debug("prefill failed: %r", exc)
            finally:
                self.slots.release(slot)

        self._start(work, "llm-prefill")
        return True

    _end_id: int | None = None
    """``<|im_end|>``'s token id, asked once (see :meth:`end_of_turn_probability`)."""
    last_end_of_turn_timings: Mapping[str, Any] = {}
    """llama.cpp's timings of the last :meth:`end_of_turn_probability` (prompt_n, cache_n,
    prompt_ms); replaced by each call, never mutated."""

    def end_of_turn_probability(self, messages: list[ChatMessage], *,
                                keep_punctuation: bool = False, timeout: float = 2.0,
                                conversation: str | None = None) -> float | None:
        """Blocking (run it in a thread): the model's probability that the last user message
        is complete, read from its next token after the message's words, in ChatML.

        By default the message's trailing punctuation is dropped first and the probability is
        that of a token ending the sentence there: ``?``, ``.``, ``!`` or ``<|im_end|>``.
        Measured (docs/end_of_turn.md): with the punctuation kept, ``<|im_end|>`` alone mostly
        says whether the text ends in punctuation: 0.98-0.99 after "...France?", 0.000 after
        "...France", and 0.87-0.99 after "Can you tell me?" or "What is the largest city
        in?", which is how Whisper writes such unfinished questions when the voice rises.
        Without it the model judges the words: complete questions 0.14-1.0 (mostly > 0.8),
        unfinished ones ("I want to know", a question cut before its last noun) <= 0.001.
        ``keep_punctuation``: the text as given and ``<|im_end|>`` only.

        The prompt is ``messages`` (up to the last user message) as a raw ChatML prefix like a
        prefill's, one token generated, in ``conversation``'s slot: its cost is the prompt not
        yet cached (~30-300 ms), and what it reads stays cached for the reply. 0.0 for tokens
        not among the 20 most likely.

        None when it cannot say: the template is not ChatML (:attr:`raw_prefill` False, or
        the messages carry tool calls, which the template renders its own way), no words are
        left, no model, a reply waits for a slot or its first token (like a prefill, it never
        makes another session's reply wait for more than its own prompt read), or no slot (its
        own, when the conversation has one) came free within ``timeout`` s.
        """
        if not self.raw_prefill:
            return None
        scored = words_to_score(messages, keep_punctuation=keep_punctuation)
        if scored is None:
            return None
        server = self._server
        if server is None or self.slots.waiting:
            return None
        prompt = self._chatml(scored)
        if prompt is None:
            return None
        if self._end_id is None:
            self._end_id = _token_id(server, "<|im_end|>", self.http_key) or IM_END_QWEN
        # Blocking: a prefill under way in this slot reads this same prompt, so waiting for it
        # is cheap; a reply that comes to wait meanwhile makes it give up.
        slot = self.slots.try_acquire(conversation, timeout)
        if slot is None:
            return None
        request = {"prompt": prompt, "n_predict": 1, "n_probs": 20, "temperature": 0.0,
                   "stream": False, "cache_prompt": True, "id_slot": slot}
        try:
            response = server.handle_completions(request)
        except Exception as exc:
            raise ProviderError(self.name, f"end-of-turn probability failed: {exc}") from exc
        finally:
            self.slots.release(slot)
        if not isinstance(response, Mapping) or "error" in response:
            error = response.get("error") if isinstance(response, Mapping) else response
            raise ProviderError(self.name, f"end-of-turn probability failed: {error}")
        self.last_end_of_turn_timings = dict(response.get("timings") or {})
        return _end_probability(response, self._end_id, punctuation_ends=not keep_punctuation)

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                     tools: Sequence[Mapping[str, Any]] | None = None,
                     conversation: str | None = None) -> AsyncIterator[LLMStreamItem]:
        """Messages with tool roles go to the GGUF's own chat template (``use_jinja``), which
        renders tool calls and results as the model was trained to read them, and so do
        ``tools``. Calls come as OpenAI ``tool_calls`` when llama.cpp parsed them, else as the
        model wrote them in its text (``tool_text``): both are yielded whole after the text.
        A reply that starts with a call is held back until the end (it is no speech).

        Inside :meth:`reserve` the reply uses the slot reserved there (whose conversation
        counts); otherwise it waits for ``conversation``'s slot itself."""
        loop = asyncio.get_running_loop()
        if tools:
            self.tools = [dict(tool) for tool in tools]
        fragments: list[dict[str, Any]] | None = [] if tools else None
        text_calls = ToolCallText(_tool_names(tools)) if tools else None
        queue: asyncio.Queue[str | BaseException | _Done] = asyncio.Queue()
        limit = max_tokens or self._config.ai.max_tokens
        reserved = _held.get()
        hold = (reserved if reserved is not None and reserved.table is self.slots
                else SlotHold(self.slots, await self.slots.acquire(conversation)))
        stop = _StopEvent(hold.slot)
        if hold is reserved:
            hold.add()  # this stream's reference; the reserve keeps its own

        def put(item: str | BaseException | _Done) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed under us: nobody is listening
                stop.set()

        threshold = self._config.tools.local_call_threshold
        nudge = threshold if tools and threshold < 1.0 else None

        def work() -> None:
            lower_thread_priority(self._config.server.model_threads_nice)
            try:
                if self._generate(messages, limit, stop, put, tools, fragments, nudge):
                    # A call is likely enough: the model goes on from the call's first words
                    # and picks the tool itself (its prompt is in the slot's cache).
                    put(_CALL_START)
                    self._generate([*messages, ChatMessage("assistant", _CALL_START)], limit,
                                   stop, put, tools, fragments)
            except BaseException as exc:  # handed to the consumer, which re-raises
                put(exc)
            finally:
                hold.done()  # before the end is seen: the slot is free once it is
                put(_DONE)

        try:
            hold.add()  # the thread's reference
            self._start(work, "llm-generate")
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    break
                if isinstance(item, BaseException):
                    raise item
                if text_calls is None:
                    yield item
                elif text := text_calls.push(item):
                    yield text
            if text_calls is not None:
                calls, rest = text_calls.finish()
                if rest:
                    yield rest
                for call in [*_parsed_calls(fragments or [], self.name), *calls]:
                    yield call
        finally:
            # Closing or cancelling the consumer lands here: the callback sees the flag on the
            # next token (~60 ms on 2 cores) and llama.cpp returns, freeing the slot.
            stop.set()
            hold.done()


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
