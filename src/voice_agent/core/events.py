"""Events the pipeline emits; transports serialise them to the wire format of docs/protocol.md."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Union

from .status import ProcessingStatus


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    text: str
    final: bool
    type: str = field(default="transcript", init=False)


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """Agent reply text. Interim events carry the text so far; the final one the whole reply."""

    text: str
    final: bool
    interrupted: bool = False
    spoken_text: str | None = None
    """With interrupted=True: the part the user actually heard."""
    type: str = field(default="ai_response", init=False)


@dataclass(frozen=True, slots=True)
class StatusEvent:
    processing_status: ProcessingStatus
    type: str = field(default="status", init=False)


@dataclass(frozen=True, slots=True)
class MetricsEvent:
    metrics: dict[str, Any]
    """One turn's stage timings in ms (see pipeline/metrics.py)."""
    type: str = field(default="metrics", init=False)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: str
    message: str
    fatal: bool = False
    type: str = field(default="error", init=False)


PipelineEvent = Union[TranscriptEvent, ResponseEvent, StatusEvent, MetricsEvent, ErrorEvent]
EventSink = Callable[[PipelineEvent], Awaitable[None]]


def event_to_wire(event: PipelineEvent) -> dict[str, Any]:
    """Flatten an event into the JSON object clients receive."""
    if isinstance(event, MetricsEvent):
        return {"type": "metrics", **event.metrics}
    data = asdict(event)
    if isinstance(event, StatusEvent):
        data["processing_status"] = event.processing_status.value
    if isinstance(event, ResponseEvent) and not event.interrupted:
        data.pop("interrupted")
        data.pop("spoken_text")
    return data
