"""One typed record per turn: when each stage finished, on one monotonic clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# Stage names in the order a turn passes them; each is a time.monotonic() mark.
STAGES = (
    "speech_end",         # the user stopped speaking (last speech frame, from VAD)
    "end_of_turn",        # the turn detector decided the turn is over
    "transcript_final",   # the final transcript is ready
    "llm_first_token",    # the LLM produced its first token
    "first_sentence",     # the chunker released the first speakable piece
    "tts_first_audio",    # the TTS produced the first audio of the reply
    "first_audio_sent",   # the transport sent the first audio frame of the reply
    "reply_done",         # the whole reply was generated (not necessarily played)
)


@dataclass
class TurnMetrics:
    turn: int
    source: str = "voice"  # "voice" or "text"
    marks: dict[str, float] = field(default_factory=dict)
    user_speech_ms: float = 0.0
    transcript_reused: bool = False
    """True when a transcript made during the pause was used as the final (no STT left to do)."""
    preemptive: bool = False
    """The reply was started from an interim while the user still spoke, and kept because the
    pause's transcript had the same words."""
    interrupted: bool = False
    playback_gaps: int = 0
    """Times the reply's audio ran dry while more of it was still being made: a silence the
    listener hears that is not in the voice (the next piece was late)."""
    playback_gap_max_ms: float = 0.0
    tool_calls: int = 0
    """Tool calls the model made in this reply (docs/tools.md)."""
    tool_errors: int = 0
    """Of those, the ones that failed (raised, timed out, bad arguments, unknown tool)."""
    tool_ms: float = 0.0
    """The time spent running tools, all calls together."""

    def add_tool_call(self, ms: float, *, ok: bool = True) -> None:
        self.tool_calls += 1
        self.tool_errors += 0 if ok else 1
        self.tool_ms += ms

    def mark(self, stage: str, at: float | None = None) -> None:
        assert stage in STAGES, stage
        self.marks.setdefault(stage, time.monotonic() if at is None else at)

    def add_playback_gap(self, ms: float) -> None:
        self.playback_gaps += 1
        self.playback_gap_max_ms = max(self.playback_gap_max_ms, ms)

    def _since(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return round((self.marks[end] - self.marks[start]) * 1000, 1)
        return None

    def _span(self, start: str, end: str) -> float | None:
        """A stage's own time. 0 when it was already done before the previous stage ended, as
        when the reply was prepared during the user's pause (the at_*_ms timeline shows when)."""
        d = self._since(start, end)
        return None if d is None else max(0.0, d)

    def as_dict(self) -> dict[str, Any]:
        """Durations in ms. Each name says which span it measures."""
        origin = "speech_end" if "speech_end" in self.marks else "end_of_turn"
        d: dict[str, Any] = {
            "turn": self.turn,
            "source": self.source,
            "user_speech_ms": round(self.user_speech_ms, 1),
            "transcript_reused": self.transcript_reused,
            "preemptive": self.preemptive,
            "interrupted": self.interrupted,
            "playback_gaps": self.playback_gaps,
            "playback_gap_max_ms": round(self.playback_gap_max_ms, 1),
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "tool_ms": round(self.tool_ms, 1),
            # spans between consecutive stages
            "end_of_turn_delay_ms": self._span("speech_end", "end_of_turn"),
            "stt_ms": self._span("end_of_turn", "transcript_final"),
            "llm_first_token_ms": self._span("transcript_final", "llm_first_token"),
            "first_sentence_ms": self._span("llm_first_token", "first_sentence"),
            "tts_first_audio_ms": self._span("first_sentence", "tts_first_audio"),
            "transport_ms": self._span("tts_first_audio", "first_audio_sent"),
            # the figure users feel: end of their speech to the first audio sent back
            "end_of_speech_to_first_audio_ms": self._since(origin, "first_audio_sent"),
            "reply_total_ms": self._since(origin, "reply_done"),
        }
        # Every stage also as an offset from the origin, for timelines.
        for stage in STAGES:
            d[f"at_{stage}_ms"] = self._since(origin, stage)
        return d
