"""The event a tool call makes: shown in the conversation, kept in the transcript."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """One tool call the model made and what it returned (wire type ``tool_call``)."""

    name: str
    arguments: str
    """The JSON text the model wrote."""
    result: str
    """What the model was told: the result as text, or ``Error: ...``."""
    ok: bool
    latency_ms: float
    type: str = field(default="tool_call", init=False)
