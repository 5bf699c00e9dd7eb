"""Per-turn stage timings as Prometheus histograms, for GET /v3/metrics.

One CollectorRegistry per app (kept on app.state), not prometheus-client's global one, so that
several apps in one process (tests) never share counters.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Stage spans from pipeline/metrics.py, in seconds for Prometheus.
STAGE_SPANS = {
    "end_of_turn_delay_ms": "end of user speech to end-of-turn decision",
    "stt_ms": "end of turn to final transcript",
    "llm_first_token_ms": "final transcript to first LLM token",
    "first_sentence_ms": "first LLM token to first speakable piece",
    "tts_first_audio_ms": "first speakable piece to first TTS audio",
    "transport_ms": "first TTS audio to first audio frame sent",
    "end_of_speech_to_first_audio_ms": "end of user speech to first audio frame sent (voice to voice)",
}
BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class TurnMetricsExporter:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage = Histogram(
            "voice_agent_turn_stage_seconds", "Duration of one stage of a turn",
            ["stage"], buckets=BUCKETS, registry=self.registry)
        self.turns = Counter("voice_agent_turns", "Turns answered", ["source", "interrupted"],
                             registry=self.registry)
        self.errors = Counter("voice_agent_errors", "Error events sent to clients", ["code"],
                              registry=self.registry)
        self.sessions = Gauge("voice_agent_active_sessions", "Sessions open now",
                              registry=self.registry)
        self.load = Gauge("voice_agent_load", "Open sessions / capacity, 0..1 (as /v3/health)",
                          registry=self.registry)
        self.refused = Counter("voice_agent_sessions_refused",
                               "Sessions refused up front for want of room", ["code"],
                               registry=self.registry)

    def observe_turn(self, metrics: dict[str, Any]) -> None:
        for key in STAGE_SPANS:
            value = metrics.get(key)
            if isinstance(value, (int, float)) and value >= 0:
                self.stage.labels(stage=key.removesuffix("_ms")).observe(value / 1000)
        self.turns.labels(source=str(metrics.get("source", "voice")),
                          interrupted=str(bool(metrics.get("interrupted"))).lower()).inc()

    def observe_error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
