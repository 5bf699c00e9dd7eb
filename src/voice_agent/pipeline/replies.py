"""A session's replies as tasks: started (maybe held), released, cancelled within a deadline.

The released reply owns the sink: its playback reports go to it, and the playback position
(``heard_s``) is its own, since the sink is cleared at each release. Every reply plays through a
view of the sink that is muted the moment the reply is cut, so a reply that does not stop in
time (a provider that ignores its cancellation) is never heard over the next one, and shows no
more text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.errors import ProviderError
from ..core.events import EventSink, PipelineEvent
from ..core.messages import ChatMessage
from ..core.tasks import TaskSet, stop_within
from ..services.base import AudioChunk, TTSService
from .metrics import TurnMetrics
from .playback import PlaybackWatch
from .reply import ReplySpeaker, ReplyState
from .sink import AudioSink, PlaybackReport

log = logging.getLogger(__name__)

APOLOGY = "Sorry, I'm having trouble answering right now. Please try again in a moment."


class ReplySink:
    """A reply's view of the session sink, muted once the reply is cut."""

    def __init__(self, sink: AudioSink) -> None:
        self._sink = sink
        self.muted = False
        self.go = asyncio.Event()
        """Cleared while the reply is paused under the user's speech: it queues nothing more
        until it goes on or is cut (and then nothing of it reaches the sink after the cut)."""
        self.go.set()

    async def play(self, chunk: AudioChunk) -> None:
        await self.go.wait()
        if not self.muted:
            await self._sink.play(chunk)

    def queued_s(self) -> float:
        return 0.0 if self.muted else self._sink.queued_s()

    async def finished(self) -> None:
        if not self.muted:
            await self._sink.finished()


@dataclass
class Run:
    """One reply's task and what is known of it."""

    id: int
    metrics: TurnMetrics
    state: ReplyState
    view: ReplySink
    watch: PlaybackWatch
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at the release: nothing of a held reply is heard or shown before."""
    task: asyncio.Task[None] | None = None


class Replies:
    def __init__(self, speaker: ReplySpeaker, tts: TTSService, sink: AudioSink, *,
                 emit: EventSink, tasks: TaskSet,
                 on_first_audio: Callable[[int], None],
                 on_end: Callable[[int, ProviderError | None], None]) -> None:
        self._speaker, self._tts, self._sink = speaker, tts, sink
        self._emit, self._tasks = emit, tasks
        self._on_first_audio, self._on_end = on_first_audio, on_end
        self._runs: dict[int, Run] = {}
        self.current: Run | None = None
        """The released reply: the one that owns the sink."""
        self.cut: set[asyncio.Task[None]] = set()
        """Tasks of cut replies that have not stopped yet."""
        self._stopping: set[asyncio.Task[bool]] = set()
        self.progress_at = time.monotonic()
        """When the sink last reported the released reply's playback (for the watchdog)."""
        sink.on_playback = self._on_playback

    def heard_s(self) -> float:
        """Seconds of the released reply's audio sent so far (the sink was cleared at its
        release, so this holds after its task ended too, until the next release)."""
        return self._sink.played_s()

    def start(self, rid: int, messages: list[ChatMessage], metrics: TurnMetrics,
              state: ReplyState, *, held: bool) -> None:
        run = self._new(rid, metrics, state)
        if not held:
            self.release(rid)
        run.task = self._tasks.spawn(self._reply(run, messages), f"reply-{rid}")

    def start_apology(self, rid: int) -> None:
        self.start_line(rid, APOLOGY)

    def start_line(self, rid: int, text: str) -> None:
        """Say a fixed line at once (the apology, an idle prompt): released, interruptible."""
        run = self._new(rid, TurnMetrics(turn=0), ReplyState())
        self.release(rid)
        run.task = self._tasks.spawn(self._say_line(run, text), f"line-{rid}")

    def release(self, rid: int) -> None:
        run = self._runs.get(rid)
        if run is None:
            return
        self._sink.clear()  # a new burst: played_s() and playback reports refer to this reply
        self.current = run
        run.gate.set()

    def pause(self, rid: int, *, paused: bool) -> None:
        """Hold the released reply's audio in the sink (the user speaks over it), or let it
        go on from the same frame."""
        run = self._runs.get(rid)
        if run is None or self.current is not run:
            return
        if paused:
            run.view.go.clear()
            self._sink.pause()
        else:
            self._sink.resume()
            run.view.go.set()

    def cancel(self, rid: int, *, flush: bool) -> None:
        """Stop the reply now: muted at once, its task cancelled and given its deadline."""
        run = self._runs.pop(rid, None)
        if run is None:
            return
        run.view.muted = True
        run.view.go.set()  # a paused reply's task goes on to notice it was cut
        if self.current is run:
            if flush:
                self._sink.clear()
            self.current = None
        task = run.task
        if task is not None and not task.done():
            self.cut.add(task)
            task.add_done_callback(self.cut.discard)
            stopper = self._tasks.spawn(stop_within(task, f"{self._tasks.owner}: reply {rid}"),
                                        "stop-reply")
            self._stopping.add(stopper)
            stopper.add_done_callback(self._stopping.discard)

    async def stopped(self) -> None:
        """Wait for the replies being cancelled to stop (each within its deadline)."""
        if self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)

    # ── the reply tasks ───────────────────────────────────────────────────────────────────
    def _new(self, rid: int, metrics: TurnMetrics, state: ReplyState) -> Run:
        run = Run(rid, metrics, state, ReplySink(self._sink), PlaybackWatch(metrics))
        self._runs[rid] = run
        return run

    async def _reply(self, run: Run, messages: list[ChatMessage]) -> None:
        error: ProviderError | None = None

        async def first_audio() -> None:
            self._on_first_audio(run.id)

        async def emit(event: PipelineEvent) -> None:
            if not run.view.muted:  # a cut reply shows no more text
                await self._emit(event)

        try:
            await self._speaker.run(messages, run.state, run.metrics, on_first_audio=first_audio,
                                    gate=run.gate, sink=run.view,  # type: ignore[arg-type]
                                    emit=emit)
            run.watch.done_writing = True
            await run.gate.wait()  # a held reply with no audio (empty) ends at its release
            await run.view.finished()  # still speaking until the last frame went out
        except ProviderError as exc:
            error = exc
        self._ended(run, error)

    async def _say_line(self, run: Run, text: str) -> None:
        try:
            async for chunk in self._tts.synthesize(text):
                await run.view.play(chunk)
            run.watch.done_writing = True
            await run.view.finished()
        except Exception as exc:  # a courtesy: the error (if any) was already told
            log.warning("%s: could not say %r: %r", self._tasks.owner, text, exc)
        self._ended(run, None)

    def _ended(self, run: Run, error: ProviderError | None) -> None:
        self._runs.pop(run.id, None)
        if self.current is run:
            self.current = None
        self._on_end(run.id, error)

    def _on_playback(self, report: PlaybackReport) -> None:
        """The sink's playback reports go to the reply that owns the sink."""
        if self.current is not None:
            self.progress_at = time.monotonic()
            self.current.watch.report(report)

