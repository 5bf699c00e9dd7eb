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

The prompts and raw cache reads are in llm_llamacpp_prompt.py, the blocking reply itself in
llm_llamacpp_generate.py (mixins of :class:`LlamaCppLLM`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage, LLMStreamItem
from voice_agent.core.priority import in_nicer_thread, lower_thread_priority
from voice_agent.services.base import LLMService
from voice_agent.services.chatml import (IM_END_QWEN, _end_probability, _plain, _token_id,
                                         after_statement, as_statement, chatml_prefix,
                                         message_end_probability,
                                         statement_share, words_to_score)
from voice_agent.services.llm_llamacpp_generate import (GenerationStats, LlamaCppGeneration,
                                                        _StopEvent)
from voice_agent.services.llm_llamacpp_prompt import LlamaCppPrompts
from voice_agent.services.llm_slots import SlotHold, SlotTable
from voice_agent.services.models import model_path
from voice_agent.services.tool_text import (_CALL_START, ToolCallText, _parsed_calls,
                                            _tool_names)

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger(__name__)


class _Done:
    """End-of-stream marker put on the queue by the worker thread."""


_DONE = _Done()

_held: contextvars.ContextVar[SlotHold | None] = contextvars.ContextVar("llm_slot", default=None)
"""The slot :meth:`LlamaCppLLM.reserve` holds for the code inside it (its :meth:`stream`)."""


class LlamaCppLLM(LlamaCppPrompts, LlamaCppGeneration, LLMService):
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

    @property
    def _nice(self) -> int:
        server = self._config.server
        return server.model_threads_nice if server.llm_threads_nice is None \
            else server.llm_threads_nice

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
            # llama.cpp's threads are made here: they inherit this thread's priority.
            self._server = in_nicer_thread(lambda: xllamacpp.Server(params), self._nice)
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
            lower_thread_priority(self._nice)
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
                                conversation: str | None = None,
                                statement_check_p: float | None = None) -> float | None:
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
        ``statement_check_p``: when the words reach this score only by a full stop (a
        statement), the full stop's share is weighed by the probability that the message ends
        after it (one token more; :func:`~voice_agent.services.chatml.after_statement`).

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
        try:
            response = self._one_token(server, prompt, slot)
            p = _end_probability(response, self._end_id, punctuation_ends=not keep_punctuation)
            period = 0.0 if keep_punctuation else statement_share(response, p, statement_check_p)
            if period:  # a statement: does the message end after it? (one token more)
                follow = self._chatml(as_statement(scored))
                if follow is not None:
                    ends = message_end_probability(self._one_token(server, follow, slot),
                                                   self._end_id)
                    p = after_statement(p, period, ends)
        finally:
            self.slots.release(slot)
        return p

    def _one_token(self, server: xllamacpp.Server, prompt: str, slot: int) -> Mapping[str, Any]:
        """A raw completion of one token with its top 20 probabilities, in ``slot``."""
        request = {"prompt": prompt, "n_predict": 1, "n_probs": 20, "temperature": 0.0,
                   "stream": False, "cache_prompt": True, "id_slot": slot}
        try:
            response = server.handle_completions(request)
        except Exception as exc:
            raise ProviderError(self.name, f"end-of-turn probability failed: {exc}") from exc
        if not isinstance(response, Mapping) or "error" in response:
            error = response.get("error") if isinstance(response, Mapping) else response
            raise ProviderError(self.name, f"end-of-turn probability failed: {error}")
        self.last_end_of_turn_timings = dict(response.get("timings") or {})
        return response

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
            lower_thread_priority(self._nice)
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
