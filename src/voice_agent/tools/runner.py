"""Running one tool call: arguments checked, a timeout, sync functions in a thread of their own,
every failure caught and described (the model is told, and says so)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.messages import ToolCall
from ..core.tasks import within
from .registry import ToolError, ToolRegistry

MAX_RESULT_CHARS = 2000
"""A result longer than this is cut: it goes into the model's prompt (a small context)."""


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    content: str
    """What the model reads: the result as text (JSON for anything not a string), or the
    error."""
    ok: bool
    latency_s: float
    error: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {"id": self.call.id, "name": self.call.name, "arguments": self.call.arguments,
                "result": self.content, "ok": self.ok, "latency_ms": round(self.latency_s * 1000, 1),
                **({"error": self.error} if self.error else {})}


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(value)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "..."


async def _in_thread(function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``function(**kwargs)`` in a daemon thread of its own: a call that hangs or is abandoned
    (timeout, barge-in) keeps no pool thread that others need; its result is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def work() -> None:
        try:
            result, ok = function(**kwargs), True
        except BaseException as exc:  # handed over, re-raised in the caller
            result, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, result)
        except RuntimeError:  # the loop is gone: nobody waits for it
            pass

    threading.Thread(target=work, name="voice-agent-tool", daemon=True).start()
    return await future


async def run_tool(registry: ToolRegistry, call: ToolCall) -> ToolResult:
    """Run ``call`` within ``registry.timeout_s``. Never raises, except ``CancelledError`` (a
    barge-in): the call is then abandoned (an async tool is cancelled; a sync one's thread
    runs on, its result dropped)."""
    start = time.perf_counter()

    def failed(message: str) -> ToolResult:
        return ToolResult(call, f"Error: {message}", False, time.perf_counter() - start, message)

    found = registry.get(call.name)
    if found is None:
        return failed(f"there is no tool named {call.name!r}; tools: "
                      f"{', '.join(registry.names()) or 'none'}")
    try:
        arguments = call.parsed_arguments() if call.arguments.strip() else {}
        if not isinstance(arguments, dict):
            raise ToolError("the arguments must be a JSON object")
        kwargs = found.bind(arguments)
    except ValueError as exc:  # invalid JSON
        return failed(f"the arguments are not valid JSON: {exc}")
    except ToolError as exc:
        return failed(str(exc))
    try:
        if found.is_async:
            work = found.function(**kwargs)
        else:
            work = _in_thread(found.function, kwargs)
        value = await within(work, registry.timeout_s)
    except TimeoutError:
        return failed(f"{call.name} did not answer within {registry.timeout_s:g} s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return failed(f"{call.name} failed: {type(exc).__name__}: {exc}")
    return ToolResult(call, _as_text(value), True, time.perf_counter() - start)
