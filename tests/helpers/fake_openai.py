"""A stand-in for a remote OpenAI-compatible chat server, on loopback, speaking the real wire
protocol (POST /v1/chat/completions, server-sent events). Its mode can be switched mid-test to
fail, hang or recover, which is what the fault tests need from a paid remote service."""

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
        for word in self.reply.split(" "):
            delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
            yield "data: " + json.dumps({**base, "choices": [delta]}) + "\n\n"
            await asyncio.sleep(0.01)
        yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
        yield "data: [DONE]\n\n"

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
