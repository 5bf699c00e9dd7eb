"""The chat messages and stream items every LLM provider shares, in OpenAI's chat format.

They live in core because the conversation history (core) builds them and every provider reads
them; core must not import the services layer. ``voice_agent.services.base`` re-exports them.

Roles: ``system``, ``user``, ``assistant`` and ``tool``. An assistant message may carry the tool
calls the model asked for (``tool_calls``); the result of one call goes back as a ``tool``
message naming the call it answers (``tool_call_id``). ``as_dict`` writes each in the wire format
of OpenAI's chat completions, which llama.cpp's chat endpoint and its Jinja templates read too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

SYSTEM = "system"
USER = "user"
ASSISTANT = "assistant"
TOOL = "tool"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for. ``arguments`` is the JSON text the model wrote,
    kept as text: the model may write invalid JSON, and only the tool's caller can decide what
    to do about that (:meth:`parsed_arguments` raises then)."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON; ``ValueError`` when the model wrote invalid JSON."""
        return json.loads(self.arguments)

    def as_dict(self) -> dict[str, Any]:
        """The call as it appears in an assistant message's ``tool_calls`` list."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


LLMStreamItem: TypeAlias = str | ToolCall
"""What :meth:`LLMService.stream` yields: a piece of text, or a complete tool call."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    tool_calls: Sequence[ToolCall] = ()
    """The calls an assistant message asked for (then ``content`` may be empty); kept as a
    tuple whatever sequence is given."""
    tool_call_id: str | None = None
    """For a ``tool`` message: the id of the :class:`ToolCall` it answers."""
    name: str | None = None
    """Optional: the tool's name on a ``tool`` message, or a participant's name on others."""

    def __post_init__(self) -> None:
        # A list would make the frozen message unhashable and mutable from outside.
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        # Refused here, where the mistake is made, rather than as an HTTP 400 from a server
        # (or a silently odd prompt from a local template) at the end of a turn.
        if self.tool_calls and self.role != ASSISTANT:
            raise ValueError(f"only assistant messages carry tool_calls, not {self.role!r}")
        if self.role == TOOL and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.tool_call_id is not None and self.role != TOOL:
            raise ValueError(f"only tool messages carry a tool_call_id, not {self.role!r}")

    def as_dict(self) -> dict[str, Any]:
        """The message in OpenAI's chat format. A plain message is exactly
        ``{"role": ..., "content": ...}``, as it always was (prompt caches and tests compare it)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            # OpenAI documents null content for a message that only calls tools; some servers
            # refuse an empty string there.
            out["content"] = self.content or None
            out["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out
