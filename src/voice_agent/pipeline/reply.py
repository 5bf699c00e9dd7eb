"""Speaks one reply: LLM tokens → chunker → TTS → sink, and knows what was actually heard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.events import EventSink, ResponseEvent
from ..core.recovery import ErrorRecoveryManager
from ..core.messages import ASSISTANT, TOOL, ToolCall
from ..services.base import ChatMessage, LLMService, TTSService
from ..services.priority_lock import NORMAL, URGENT, CoreTurn, urgent_as
from ..core.activity import Activity
from .pace import Pace
from .chunker import SentenceChunker
from .metrics import TurnMetrics
from .silence import ends_sentence, trim_silence
from .speakable import speakable
from .sink import AudioSink

if TYPE_CHECKING:
    from ..tools import ToolRegistry, ToolResult

LOW_WATER_S = 1.0
"""When less audio than this is left to play and no piece is being synthesised, the words written
so far are spoken at once, even inside a clause: a piece takes Piper 0.2-0.5 s beside the running
LLM (more on a busy machine), and a silence in the middle of a reply is worse than a cut. At
0.6 s the paced-reply test still fell silent for ~400 ms in 2 of about 12 runs."""
LOW_WATER_MIN_WORDS = 3
"""Complete words such a cut waits for, until under a third of LOW_WATER_S is left; then one
word will do (a long word is several tokens, and a silence is near)."""


@dataclass
class SpokenPiece:
    text: str
    audio_start_s: float  # offset in the reply's audio
    audio_end_s: float


@dataclass
class ReplyState:
    """What a reply has produced so far; read after a barge-in to cut the history."""

    text: str = ""
    pieces: list[SpokenPiece] = field(default_factory=list)
    audio_queued_s: float = 0.0
    playing: bool = False
    """The reply's audio was released to a sink that plays in real time (it queued audio)."""
    synthesizing: bool = False
    """A piece is being made into audio now: more audio is on its way, no cut is needed yet."""
    tool_messages: list[ChatMessage] = field(default_factory=list)
    """The tool exchange of this reply (assistant calls, tool results), in order: what the
    model read before its final answer."""
    tool_results: list[ToolResult] = field(default_factory=list)
    tools_shown: int = 0
    """How many of ``tool_results`` were shown (a ``tool_call`` event each)."""
    pace: Pace = field(default_factory=lambda: Pace(None))
    """Its courtesy towards other replies on the same models (set by the speaker)."""

    def spoken_text(self, played_s: float) -> str:
        """Text heard by the user when ``played_s`` seconds of the reply's audio were played."""
        heard: list[str] = []
        for p in self.pieces:
            if p.audio_end_s <= played_s:
                heard.append(p.text)
            elif p.audio_start_s < played_s:
                words = p.text.split()
                share = (played_s - p.audio_start_s) / max(p.audio_end_s - p.audio_start_s, 1e-6)
                heard.append(" ".join(words[: int(len(words) * share)]))
                break
            else:
                break
        return " ".join(h for h in heard if h).strip()


class ReplySpeaker:
    """Runs the LLM and the TTS concurrently: the LLM keeps writing while earlier pieces are spoken.

    While other replies wait for the model (several sessions at once), the cores are shared and
    the LLM may write slower than the voice speaks: then a reply's first piece is a whole clause
    or sentence, played only once the next one is written: the reply starts later, with a piece
    in hand, instead of breaking off after its first words.
    """

    def __init__(self, llm: LLMService, tts: TTSService, sink: AudioSink, emit: EventSink,
                 recovery: ErrorRecoveryManager, *, max_tokens: int, timeout_s: float,
                 streaming: bool = True, first_piece_max_words: int = 0,
                 low_water_s: float = LOW_WATER_S, conversation: str | None = None,
                 tools: ToolRegistry | None = None, activity: Activity | None = None,
                 take_turns: bool = False, make_way: bool = False) -> None:
        self.llm, self.tts, self.sink, self.emit = llm, tts, sink, emit
        # Passed on only when set: wrappers around an LLM (tests) may not take the keyword.
        self._conversation: dict[str, Any] = {"conversation": conversation} if conversation else {}
        """The LLM keeps this conversation's prompt cache (its own slot) between replies."""
        self.recovery = recovery
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.streaming = streaming
        """False gives the naive baseline: whole reply first, then the whole TTS."""
        self.first_piece_max_words = first_piece_max_words
        self.low_water_s = low_water_s
        """0 turns the cut for audio about to run dry off."""
        self.tools = tools if tools else None
        """The tools offered to the model (None or empty: none is sent)."""
        self.activity = activity
        """The replies of every session on these models (pipeline/pace.py); None: alone."""
        self.make_way = make_way
        """Stop writing while another session's reply waits in silence (pipeline/pace.py)."""
        self.take_turns = take_turns
        """The LLM runs on this machine's cores: each call's prompt read (up to its first
        token) takes its turn on them, not beside Whisper (services/priority_lock.py)."""

    async def run(self, messages: list[ChatMessage], state: ReplyState, metrics: TurnMetrics,
                  *, on_first_audio: Callable[[], Awaitable[None]], gate: asyncio.Event,
                  sink: AudioSink | None = None, emit: EventSink | None = None) -> None:
        """Make the reply into ``sink``, showing its text through ``emit`` (the speaker's own by
        default). Nothing is heard or shown before ``gate`` is set: a reply prepared while the
        user pauses waits there until the turn really ends."""
        sink = sink if sink is not None else self.sink
        emit = emit if emit is not None else self.emit
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        state.pace = Pace(self.activity, self._conversation.get("conversation") or "")
        with state.pace.silent_until() as audible:
            state.pace.audible = audible
            await self._run(messages, pieces, state, metrics, on_first_audio, gate, sink, emit)

    async def _run(self, messages: list[ChatMessage], pieces: asyncio.Queue[str | None],
                   state: ReplyState, metrics: TurnMetrics,
                   on_first_audio: Callable[[], Awaitable[None]], gate: asyncio.Event,
                   sink: AudioSink, emit: EventSink) -> None:
        speaker = asyncio.create_task(self._speak(pieces, state, metrics, on_first_audio, gate,
                                                  sink), name="reply-speak")
        thinker = asyncio.create_task(self._think(messages, pieces, state, metrics, gate, sink,
                                                  emit), name="reply-think")
        try:
            # The speaker only ends first by failing (the TTS): that is the reply's error now,
            # not once the LLM has written a reply nobody will hear.
            await asyncio.wait({thinker, speaker}, return_when=asyncio.FIRST_COMPLETED)
            if speaker.done():
                await speaker
            await thinker
            await pieces.put(None)
            await speaker
            if gate.is_set():
                await _show_tools(state, emit)
        finally:
            for task in (thinker, speaker):
                task.cancel()
            await asyncio.gather(thinker, speaker, return_exceptions=True)

    async def _think(self, messages: list[ChatMessage], pieces: asyncio.Queue[str | None],
                     state: ReplyState, metrics: TurnMetrics, gate: asyncio.Event,
                     sink: AudioSink, emit: EventSink) -> None:
        """The reply's text into ``pieces``. With tools: the calls the model makes are run
        (a filler said if one takes long and nothing was said yet), their results appended,
        and the model asked again, up to ``tools.max_rounds`` rounds; the last time without
        tools, so that it answers."""
        tools = self.tools
        history = list(messages)
        rounds = 0
        async with self.llm.reserve(**self._conversation):  # a free slot; not provider time
            cut = 0 if self.llm.waiting else self.first_piece_max_words
            chunker = SentenceChunker(first_piece_max_words=cut)
            while True:
                offer = (tools.schemas() if tools is not None and rounds < tools.max_rounds
                         else None)
                before = len(state.text)
                try:
                    calls = await self._stream_once(history, offer, chunker, pieces, state,
                                                    metrics, gate, sink, emit)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception:
                    if not rounds or tools is None:
                        raise
                    # The tools ran but the model failed to answer with their results.
                    calls = []
                    await self._say(tools.apology, pieces, state, metrics, gate, emit)
                if not calls or tools is None or offer is None:
                    if rounds and tools is not None and not state.text[before:].strip():
                        await self._say(tools.apology, pieces, state, metrics, gate, emit)
                    break
                rounds += 1
                if self.streaming and (rest := chunker.flush()):
                    await pieces.put(rest)  # the words before the call are said now
                said = state.text[before:].strip()
                results = await self._run_tools(calls, tools, pieces, state, metrics, gate,
                                                emit)
                exchange = [ChatMessage(ASSISTANT, said, tool_calls=calls),
                            *(ChatMessage(TOOL, r.content, tool_call_id=r.call.id,
                                          name=r.call.name) for r in results)]
                state.tool_messages += exchange
                history += exchange
        metrics.mark("reply_done")
        rest = chunker.flush() if self.streaming else SentenceChunker().flush_all(state.text)
        if rest:
            metrics.mark("first_sentence")
            await pieces.put(rest)

    async def _stream_once(self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None,
                           chunker: SentenceChunker, pieces: asyncio.Queue[str | None],
                           state: ReplyState, metrics: TurnMetrics, gate: asyncio.Event,
                           sink: AudioSink, emit: EventSink) -> list[ToolCall]:
        """One model call: its text spoken as it comes; the tool calls it made returned."""
        kwargs: dict[str, Any] = dict(self._conversation)
        if tools:  # only then: wrappers around an LLM (tests) may not take the keyword
            kwargs["tools"] = tools

        def model(prompt: list[ChatMessage], limit: int) -> AsyncIterator[object]:
            return self.recovery.guard_stream(
                self.llm.name, lambda: self.llm.stream(prompt, max_tokens=limit, **kwargs),
                first_item_timeout_s=self.timeout_s, item_timeout_s=self.timeout_s)

        stream = model(messages, self.max_tokens)
        calls: list[ToolCall] = []
        first = True
        start, tokens = len(state.text), 0
        # Only a plain reply pauses for others: a continuation after tool calls would need
        # the exchange re-read, and a provider that cannot continue its own words never does.
        pausable = (self.make_way and self.streaming and not tools
                    and getattr(self.llm, "continues_replies", False))
        while True:
            yielded = False
            turn = CoreTurn()
            try:
                if self.take_turns:
                    await turn.take()
                async for token in stream:
                    turn.release()  # the prompt is read
                    tokens += 1
                    first = await self._take(token, first, calls, chunker, pieces, state,
                                             metrics, gate, sink, emit)
                    if pausable and state.pace.should_yield(
                            has_audio="tts_first_audio" in metrics.marks,
                            held=not gate.is_set(), queued_s=sink.queued_s()):
                        yielded = True
                        break
            finally:
                turn.release()
                await stream.aclose()  # type: ignore[attr-defined]
            if not yielded or tokens >= self.max_tokens:
                return calls
            await state.pace.wait(sink.queued_s, lambda: not gate.is_set())
            # The model goes on with its own words: llama.cpp reads an assistant message last
            # in the prompt as the start of the reply (its prefix is still in the slot's cache).
            so_far = ChatMessage(ASSISTANT, state.text[start:])
            stream = model([*messages, so_far], self.max_tokens - tokens)

    async def _take(self, token: object, first: bool, calls: list[ToolCall],
                    chunker: SentenceChunker, pieces: asyncio.Queue[str | None],
                    state: ReplyState, metrics: TurnMetrics, gate: asyncio.Event,
                    sink: AudioSink, emit: EventSink) -> bool:
        """One item of the model's stream: text said and shown as it comes, a call kept.
        Returns whether the next text is still the first of this call."""
        metrics.mark("llm_first_token")
        if isinstance(token, ToolCall):
            calls.append(token)
            return first
        if not isinstance(token, str):
            return first
        if (first and state.text and not state.text[-1].isspace() and token
                and not token[0].isspace()):
            token = " " + token  # a round after a tool call starts a new sentence
        state.text += token
        if not self.streaming:
            return False
        if gate.is_set():  # interim events carry the whole text so far
            await emit(ResponseEvent(state.text, final=False))
            await _show_tools(state, emit)
        out = chunker.push(token)
        if not out and (words := self._words_to_cut(pieces, state, sink)):
            out = [p] if (p := chunker.cut_words(words)) else []
        for piece in out:
            metrics.mark("first_sentence")
            await pieces.put(piece)
        return False

    async def _say(self, text: str, pieces: asyncio.Queue[str | None], state: ReplyState,
                   metrics: TurnMetrics, gate: asyncio.Event, emit: EventSink) -> None:
        """A fixed line (the filler, the apology) said as part of the reply."""
        state.text = f"{state.text.rstrip()} {text}".lstrip() + " "
        if not self.streaming:
            return  # the whole text is said at the end
        metrics.mark("first_sentence")
        await pieces.put(text)
        if gate.is_set():
            await emit(ResponseEvent(state.text, final=False))

    async def _run_tools(self, calls: list[ToolCall], tools: ToolRegistry,
                         pieces: asyncio.Queue[str | None], state: ReplyState,
                         metrics: TurnMetrics, gate: asyncio.Event,
                         emit: EventSink) -> list[ToolResult]:
        """Run the calls one after another (a barge-in cancels the one running); a filler
        is said if they take longer than ``filler_after_s`` and nothing was said yet."""
        from ..tools import run_tool

        async def filler() -> None:
            await asyncio.sleep(tools.filler_after_s)
            await self._say(tools.filler, pieces, state, metrics, gate, emit)

        waiting = (asyncio.create_task(filler(), name="reply-tool-filler")
                   if tools.filler and not state.text.strip() and self.streaming else None)
        results = []
        try:
            for call in calls:
                result = await run_tool(tools, call)
                results.append(result)
                state.tool_results.append(result)
                metrics.add_tool_call(result.latency_s * 1000, ok=result.ok)
                if gate.is_set():
                    await _show_tools(state, emit)
        finally:
            if waiting is not None:
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        return results

    def _words_to_cut(self, pieces: asyncio.Queue[str | None], state: ReplyState,
                      sink: AudioSink) -> int:
        """0 while the reply's audio flows; when it is about to run dry, how many complete
        words are enough to speak now."""
        if not state.playing or state.synthesizing or not pieces.empty():
            return 0
        left = sink.queued_s()
        if left >= self.low_water_s:
            return 0
        return 1 if left < self.low_water_s / 3 else LOW_WATER_MIN_WORDS

    async def _speak(self, pieces: asyncio.Queue[str | None], state: ReplyState, metrics: TurnMetrics,
                     on_first_audio: Callable[[], Awaitable[None]], gate: asyncio.Event,
                     sink: AudioSink) -> None:
        mid_sentence = False  # the last piece stopped inside a sentence: no pause at the join
        while (text := await pieces.get()) is not None:
            start = state.audio_queued_s
            state.synthesizing = True
            spoken = speakable(text)  # "$20" is read as "twenty dollars"; the text shown stays
            stream = self.recovery.guard_stream(
                self.tts.name, lambda: self.tts.synthesize(spoken),
                first_item_timeout_s=self.timeout_s, item_timeout_s=self.timeout_s)
            # No silence before the reply's first sound, nor at a join inside a sentence. Every
            # chunk of a piece that ends inside a sentence loses its tail: Piper makes one chunk
            # per sentence, so such a piece is one chunk, and waiting to see which chunk is the
            # last would mean waiting for the TTS, which other sessions may be holding.
            lead, ends = mid_sentence or not state.pieces, ends_sentence(text)
            # Shared TTS: a piece whose listener would hear silence without it goes before
            # other sessions' pieces that have audio queued ahead (issue #15 item 2).
            dry = sink.queued_s() < self.low_water_s
            try:
                with urgent_as(URGENT if dry else NORMAL):
                    async for chunk in stream:
                        chunk = trim_silence(chunk, lead=lead, tail=not ends)
                        lead = False
                        if "tts_first_audio" not in metrics.marks:
                            metrics.mark("tts_first_audio")
                            state.pace.audible()  # others may have the cores now
                            await gate.wait()
                            if self.llm.waiting:  # shared cores: start one piece ahead
                                await _next_piece_written(pieces)
                            await on_first_audio()
                        await sink.play(chunk)
                        state.audio_queued_s += chunk.duration_s
                        state.playing = state.playing or sink.queued_s() > 0
            finally:
                state.synthesizing = False
                await stream.aclose()  # type: ignore[attr-defined]
            state.pieces.append(SpokenPiece(text, start, state.audio_queued_s))
            mid_sentence = not ends


async def _show_tools(state: ReplyState, emit: EventSink) -> None:
    """A ``tool_call`` event for each tool result not shown yet."""
    from ..tools import ToolCallEvent
    while state.tools_shown < len(state.tool_results):
        r = state.tool_results[state.tools_shown]
        state.tools_shown += 1
        await emit(ToolCallEvent(r.call.name, r.call.arguments, r.content, r.ok,  # type: ignore[arg-type]
                                 round(r.latency_s * 1000, 1)))


async def _next_piece_written(pieces: asyncio.Queue[str | None], poll_s: float = 0.02) -> None:
    """Wait until the piece after the first is written (or the whole reply is)."""
    while pieces.empty():
        await asyncio.sleep(poll_s)
