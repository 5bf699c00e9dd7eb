"""A stand-in for a remote OpenAI-compatible chat server, on loopback, speaking the real wire
protocol (POST /v1/chat/completions, server-sent events). Its mode can be switched mid-test to
fail, hang or recover, which is what the fault tests need from a paid remote service.

With ``tool_calls`` set it also streams tool calls after the text, in OpenAI's documented
streaming format: per call a first delta with ``index``, ``id``, ``type`` and ``function.name``
(empty arguments), then ``function.arguments`` in fragments carrying only the ``index``, and
``finish_reason: "tool_calls"`` at the end."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeOpenAI:
    reply: str = "The capital of France is Paris."
    mode: str = "ok"  # ok | error | hang
    requests: list[dict] = field(default_factory=list)
    port: int = 0
    tool_calls: list[dict] = field(default_factory=list)
    """Calls to stream after the reply: {"name": ..., "arguments": "<JSON text>"}."""
    fragment_chars: int = 7
    """Arguments are cut into pieces this long, as a real model streams them."""
    interleave_tool_calls: bool = False
    """Alternate the calls' fragments (parallel calls told apart only by their index)."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("authorization"),
                              "at": time.monotonic()})
        if self.mode == "error":
            return JSONResponse({"error": {"message": "upstream overloaded", "type": "server_error"}},
                                status_code=503)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return StreamingResponse(self._events(body), media_type="text/event-stream")

    async def _events(self, body: dict):
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "fake")}
        yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + "\n\n"
        for word in self.reply.split(" ") if self.reply else ():
            delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
            yield "data: " + json.dumps({**base, "choices": [delta]}) + "\n\n"
            await asyncio.sleep(0.01)
        for fragment in self._tool_call_fragments():
            delta = {"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}
            yield "data: " + json.dumps({**base, "choices": [delta]}) + "\n\n"
        finish = "tool_calls" if self.tool_calls else "stop"
        yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}) + "\n\n"
        yield "data: [DONE]\n\n"

    def _tool_call_fragments(self) -> list[dict]:
        per_call = []
        for i, call in enumerate(self.tool_calls):
            args, n = call.get("arguments", ""), self.fragment_chars
            first = {"index": i, "id": call.get("id", f"call_{i}abc"), "type": "function",
                     "function": {"name": call["name"], "arguments": ""}}
            rest = [{"index": i, "function": {"arguments": args[j:j + n]}}
                    for j in range(0, len(args), n)]
            per_call.append([first, *rest])
        if not self.interleave_tool_calls:
            return [f for frags in per_call for f in frags]
        out = []
        for step in range(max((len(f) for f in per_call), default=0)):
            out += [frags[step] for frags in per_call if step < len(frags)]
        return out

    def start(self) -> FakeOpenAI:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake OpenAI server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
