"""A stand-in for a remote OpenAI-compatible chat server, on loopback, speaking the real wire
protocol (POST /v1/chat/completions, server-sent events). Its mode can be switched mid-test to
fail, hang or recover, which is what the fault tests need from a paid remote service.

With ``tool_calls`` set it also streams tool calls after the text, in OpenAI's documented
streaming format: per call a first delta with ``index``, ``id``, ``type`` and ``function.name``
(empty arguments), then ``function.arguments`` in fragments carrying only the ``index``, and
``finish_reason: "tool_calls"`` at the end.

The audio routes of OpenAI's API too (services/openai_audio.py): ``POST /v1/audio/speech``
(JSON ``model``, ``voice``, ``input``, ``response_format: "pcm"``: raw 24 kHz 16-bit
little-endian mono, streamed; ``"wav"``: the same with a WAV header) and ``POST
/v1/audio/transcriptions`` (multipart ``file``, ``model``, ...; answers ``{"text":
transcript}``), and ``GET /v1/models``. Every route also answers under ``/openai/v1`` (Groq's
root, :attr:`groq_base_url`). With ``api_key`` set, a request without ``Authorization: Bearer
<api_key>`` gets 401 with OpenAI's error body. ``first_delay_s`` delays every answer's first
bytes; ``drop_after_chunks`` cuts a speech stream after that many chunks (the connection closes
mid-body)."""

from __future__ import annotations

import asyncio
import email.policy
import io
import json
import socket
import threading
import time
import wave
from dataclasses import dataclass, field
from email.parser import BytesParser

import numpy as np

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
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Bearer <api_key>``; else 401."""
    transcript: str = "What is the capital of France?"
    first_delay_s: float = 0.0
    drop_after_chunks: int | None = None
    speech_format: str | None = None
    """Answer /audio/speech in this format whatever was asked ("wav": a server that only
    writes WAV files)."""

    @property
    def groq_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/openai/v1"

    def _unauthorized(self, request: Request) -> Response | None:
        if self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return JSONResponse({"error": {"message": "Invalid API Key", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}}, status_code=401)

    async def _models(self, request: Request) -> Response:
        self.requests.append({"path": request.url.path, "auth": request.headers.get("authorization"),
                              "at": time.monotonic()})
        return self._unauthorized(request) or JSONResponse(
            {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def _speech(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"path": request.url.path, "body": body,
                              "auth": request.headers.get("authorization"), "at": time.monotonic()})
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if self.mode == "error":
            return JSONResponse({"error": {"message": "upstream overloaded", "type": "server_error"}},
                                status_code=503)
        n = int(24_000 * 0.005 * len(body.get("input", "")))  # 5 ms per character
        pcm = (np.sin(2 * np.pi * 440 * np.arange(n) / 24_000) * 8000).astype("<i2").tobytes()
        fmt = self.speech_format or body.get("response_format", "mp3")
        if fmt == "wav":
            out = io.BytesIO()
            with wave.open(out, "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(24_000)
                w.writeframes(pcm)
            data, media = out.getvalue(), "audio/wav"
        elif fmt == "pcm":
            data, media = pcm, "audio/pcm"
        else:
            return JSONResponse({"error": {"message": f"the fake writes pcm or wav, not {fmt}"}},
                                status_code=400)

        async def chunks():  # odd sizes: a sample (and the WAV header) split across chunks
            if self.first_delay_s:
                await asyncio.sleep(self.first_delay_s)
            for k, i in enumerate(range(0, len(data), 2401)):
                if self.drop_after_chunks is not None and k >= self.drop_after_chunks:
                    raise ConnectionResetError("the fake drops the stream mid-utterance")
                yield data[i:i + 2401]
                await asyncio.sleep(0)
        return StreamingResponse(chunks(), media_type=media)

    async def _transcriptions(self, request: Request) -> Response:
        raw = await request.body()
        message = BytesParser(policy=email.policy.default).parsebytes(
            b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + raw)
        form: dict[str, object] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            form[name] = payload if part.get_filename() else payload.decode()
        self.requests.append({"path": request.url.path, "form": form,
                              "auth": request.headers.get("authorization"), "at": time.monotonic()})
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if self.mode == "error":
            return JSONResponse({"error": {"message": "upstream overloaded", "type": "server_error"}},
                                status_code=503)
        if self.first_delay_s:
            await asyncio.sleep(self.first_delay_s)
        return JSONResponse({"text": self.transcript})

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("authorization"),
                              "at": time.monotonic(), "path": request.url.path})
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if self.mode == "error":
            return JSONResponse({"error": {"message": "upstream overloaded", "type": "server_error"}},
                                status_code=503)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return StreamingResponse(self._events(body), media_type="text/event-stream")

    async def _events(self, body: dict):
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "fake")}
        if self.first_delay_s:  # a slow first token (the headers came at once)
            await asyncio.sleep(self.first_delay_s)
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
        app = Starlette(routes=[
            route for root in ("/v1", "/openai/v1") for route in (
                Route(f"{root}/chat/completions", self._chat, methods=["POST"]),
                Route(f"{root}/models", self._models, methods=["GET"]),
                Route(f"{root}/audio/speech", self._speech, methods=["POST"]),
                Route(f"{root}/audio/transcriptions", self._transcriptions, methods=["POST"]))])
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
