"""Tool calls a local model writes as text, told apart from its spoken words.

llama.cpp turns a model's tool-call output into OpenAI ``tool_calls`` only when it recognises
the model's format and the output parses. The packaged Qwen2.5-Coder-1.5B's own chat template
shows the model ``{{"name": <function-name>, "arguments": <args-json-object>}}`` (doubled
braces: a Jinja string where Python's format() was meant), and the model copies it, mostly
without the ``<tool_call>`` tags around it (measured: 4 of 4 calls written as
``{{"name": "door_code", "arguments": {}}}}``): llama.cpp passes that on as text. A reply that
starts with a JSON object naming a tool, or that holds ``<tool_call>`` tags, is read as calls
here; ordinary words stream through at once.
"""

from __future__ import annotations

import json
import secrets
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from voice_agent.core.messages import ToolCall

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class ToolCallText:
    """Feed the reply's pieces to :meth:`push`, which returns the text safe to speak now;
    :meth:`finish` returns the calls found and any text held back that was no call."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)
        self._held = ""
        self._mode = "start"  # start (nothing but blanks yet) | text | held

    def push(self, piece: str) -> str:
        if self._mode == "held":
            self._held += piece
            return ""
        if self._mode == "start":
            self._held += piece
            head = self._held.lstrip()
            if not head:
                return ""
            if head.startswith("{") or head.startswith(OPEN):
                self._mode = "held"
                return ""
            if OPEN.startswith(head):  # "<tool" so far: wait for the rest
                return ""
            self._mode, piece, self._held = "text", self._held, ""
        # text: a call may still follow the words; hold from a tag (or what may become one)
        text = self._held + piece
        self._held = ""
        at = text.find(OPEN)
        if at >= 0:
            self._mode, self._held = "held", text[at:]
            return text[:at]
        for keep in range(min(len(OPEN) - 1, len(text)), 0, -1):
            if OPEN.startswith(text[-keep:]):
                self._held = text[-keep:]
                return text[:-keep]
        return text

    def finish(self) -> tuple[list[ToolCall], str]:
        """The calls, and the held-back text that was no call (to be said after all)."""
        held, self._held = self._held, ""
        if self._mode != "held":
            return [], held
        calls = [c for c in _parse_calls(held) if c.name in self.names]
        return (calls, "") if calls else ([], held)


def _parse_calls(text: str) -> list[ToolCall]:
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    rest = text.replace(OPEN, " ").replace(CLOSE, " ")
    i = 0
    while True:
        start = rest.find("{", i)
        if start < 0:
            return calls
        while rest.startswith("{{", start):  # the template's doubled braces, copied
            start += 1
        try:
            value, end = decoder.raw_decode(rest, start)
        except ValueError:
            return calls
        i = end
        call = _as_call(value)
        if call is not None:
            calls.append(call)


def _as_call(value: Any) -> ToolCall | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        text = arguments or "{}"
    else:
        text = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return ToolCall(f"call_{secrets.token_hex(4)}", value["name"], text)


# -- llama.cpp's side of a call (services/llm_llamacpp.py) ----------------------------------

_CALL_START = '{"name": "'
_CALL_STARTS = ("{", "{{", '{"', " {", "<tool_call>")
"""The texts a tool call starts with: kept out of a reply that may not call one."""
_TOP_LOGPROBS = 10


def _call_chance(choice: Mapping[str, Any]) -> float:
    """The probability that a reply's first token starts a tool call (``{``, ``{{``, ``{"``,
    ``<`` for ``<tool_call>``), from its ``top_logprobs``, whichever token was drawn: the
    reply draws its own first token again (temperature), so a call drawn here is no call
    drawn there."""
    content = (choice.get("logprobs") or {}).get("content") or [{}]
    top = content[0].get("top_logprobs") or []
    return sum(math.exp(float(e.get("logprob", -math.inf))) for e in top
               if str(e.get("token", "")).lstrip().startswith(("{", "<")))


def _tool_names(tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    names = []
    for tool in tools or ():
        function = tool.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _parsed_calls(fragments: list[dict[str, Any]], provider: str) -> list[ToolCall]:
    """The calls llama.cpp parsed, from their streamed fragments (OpenAI's format)."""
    if not fragments:
        return []
    from voice_agent.services.llm_openai import _ToolCalls  # the same assembly, one place
    calls = _ToolCalls()
    calls.add(fragments)
    return calls.complete(provider)
