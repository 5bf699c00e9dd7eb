"""A voice pipeline on fake providers, with helpers to talk to it and read what it did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.helpers.fakes import (FakeLLM, FakeSink, FakeSTT, FakeTTS, fake_services, silence,
                                 speech)
from voice_agent.core.config import V3Config
from voice_agent.core.events import (ErrorEvent, MetricsEvent, PipelineEvent, ResponseEvent,
                                     StatusEvent, TranscriptEvent)
from voice_agent.core.status import ProcessingStatus
from voice_agent.pipeline.agent import VoicePipeline
from voice_agent.services.factory import Services
from voice_agent.pipeline.turn import TurnState

END_SILENCE_MS = 700  # more than the 500 ms that end a turn
WAIT_S = 10.0
"""How long a test waits for what the fakes should do at once: a deadline against a hang, not a
timing check (on a machine busy with other runs a 2 s one was missed now and then)."""


def config(**stt: Any) -> V3Config:
    """Defaults, but interims only when the test asks (a pause), never on a wall-clock timer."""
    base = V3Config()
    return base.model_copy(update={
        "stt": base.stt.model_copy(update={"interim_interval_ms": 10000, **stt}),
        "ai": base.ai.model_copy(update={"timeout_s": 2.0}),
        "recovery": base.recovery.model_copy(update={"attempts": 1}),
    })


class Harness:
    def __init__(self, cfg: V3Config | None = None, *, services: Services | None = None,
                 session_id: str = "t") -> None:
        self.services = services or fake_services()
        self.sink = FakeSink()
        self.sink.take()  # a listener is there from the start
        self.events: list[PipelineEvent] = []
        self.pipeline = VoicePipeline(self.services, cfg or config(), emit=self._record,
                                      sink=self.sink, session_id=session_id)

    async def _record(self, event: PipelineEvent) -> None:
        self.events.append(event)

    @property
    def stt(self) -> FakeSTT:
        return self.services.stt  # type: ignore[return-value]

    @property
    def llm(self) -> FakeLLM:
        return self.services.llm  # type: ignore[return-value]

    @property
    def tts(self) -> FakeTTS:
        return self.services.tts  # type: ignore[return-value]

    @property
    def state(self) -> TurnState:
        return self.pipeline.state

    async def __aenter__(self) -> Harness:
        await self.pipeline.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with asyncio.timeout(3):
            await self.pipeline.close()

    # ── talking ───────────────────────────────────────────────────────────────────────────
    async def push(self, audio: np.ndarray) -> None:
        await self.pipeline.push_audio(audio)

    async def say(self, text: str, *, end: bool = True) -> None:
        """Speak ``text``; with ``end``, then stay quiet long enough to end the turn."""
        await self.push(speech(text))
        if end:
            await self.push(silence(END_SILENCE_MS))
            await self.quiet_until_the_turn_ends()

    async def quiet_until_the_turn_ends(self, most_ms: float = 2500) -> None:
        """Silence frame by frame, the event loop running in between, until the turn ends:
        silence pushed at once gave the pause's transcript and score no time to arrive, and
        the turn waits for them (up to end_of_turn.verdict_wait_ms, or a verdict's own wait)."""
        detector = self.pipeline._detector
        for _ in range(round(most_ms / 32)):
            if not detector.in_speech:
                return
            await self.settle()
            await asyncio.sleep(0.002)  # a provider behind a real socket (a fake Deepgram)
            await self.push(silence(32))

    async def pause(self, ms: float = 250) -> None:
        await self.push(silence(ms))

    async def settle(self) -> None:
        """Let every task that can run, run (the fakes never sleep for real)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def until(self, predicate: Callable[[], object], what: str,
                    timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; state {self.state}, "
                                     f"events {[self.describe(e) for e in self.events]}")
            await asyncio.sleep(0.001)

    async def until_speaking(self) -> None:
        await self.until(lambda: self.sink.queued_s() > 0, "the agent's audio")

    async def answered(self, n: int = 1, timeout: float = WAIT_S) -> list[ResponseEvent]:
        """Let the agent finish ``n`` replies in all, playing out their audio as it comes."""
        deadline = time.monotonic() + timeout
        while len(self.replies()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {n} replies; state {self.state}, "
                                     f"events {[self.describe(e) for e in self.events]}")
            self.sink.play_out()
            await asyncio.sleep(0.001)
        return self.replies()

    # ── reading ───────────────────────────────────────────────────────────────────────────
    def of(self, kind: type, **match: Any) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)
                and all(getattr(e, k) == v for k, v in match.items())]

    def finals(self) -> list[str]:
        return [e.text for e in self.of(TranscriptEvent, final=True)]

    def replies(self) -> list[ResponseEvent]:
        return self.of(ResponseEvent, final=True)

    def errors(self) -> list[str]:
        return [e.code for e in self.of(ErrorEvent)]

    def statuses(self) -> list[ProcessingStatus]:
        return [e.processing_status for e in self.of(StatusEvent)]

    def metrics(self) -> list[dict[str, Any]]:
        return [e.metrics for e in self.of(MetricsEvent)]

    def history(self) -> list[tuple[str, str]]:
        return [(m["role"], m["text"]) for m in self.pipeline.conversation.history]

    @staticmethod
    def describe(e: PipelineEvent) -> str:
        if isinstance(e, StatusEvent):
            return f"status:{e.processing_status.value}"
        if isinstance(e, MetricsEvent):
            return "metrics"
        return f"{e.type}:{getattr(e, 'text', getattr(e, 'code', ''))!r}"
