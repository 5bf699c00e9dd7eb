"""A stand-in for ElevenLabs' text-to-speech API on loopback, speaking its documented wire
protocol, for the tests of services/tts_elevenlabs.py (no internet, no paid key).

WebSocket ``GET /v1/text-to-speech/{voice_id}/stream-input?model_id=...&output_format=pcm_<rate>``
(the "WebSocket" page of ElevenLabs' API reference): the key comes in the ``xi-api-key`` header
(or as ``xi_api_key`` in the first message); the client sends the first message ``{"text": " ",
...}`` (voice_settings, generation_config optional), then text messages (``{"text": "Hello. ",
"flush": true}``) and ``{"text": ""}`` to end the input. The server answers ``{"audio":
"<base64>", "isFinal": null, "normalizedAlignment": {...}, "alignment": {...}}`` per audio chunk,
buffering text until a flush or the end of input, and ``{"isFinal": true}`` at the end, then
closes the socket. Errors close it with 1008 (policy violation) and a reason.

HTTP ``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>`` (body ``{"text",
"model_id"}``, header ``xi-api-key``) streams raw little-endian 16-bit PCM; ``GET
/v1/voices/{voice_id}`` answers the voice. A bad key: 401 ``{"detail": {"status":
"invalid_api_key", "message": "Invalid API key"}}``.

The audio is a tone, 5 ms per character of text, sent in 50 ms chunks. Knobs switched mid-test:
``reject`` (``"close"``: accept the socket, then close it 1008 "Invalid API key" after the first
message, as the service closes on errors; ``"handshake"``: refuse the upgrade with 401, which is
also the fake's answer to a wrong key in the header: the real service's exact answer there is
not documented), ``drop_after_chunks`` (end the TCP connection without a close frame after that
many audio messages: a stream that drops mid-utterance), ``first_audio_delay_s`` (a slow first
result), ``chunk_interval_s``, ``send_final = False`` (no ``isFinal`` before the normal close),
``close_after_first_message``, ``websocket = False`` (the upgrade refused with 404, as by a
proxy without WebSocket support: the client's HTTP fallback).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

MS_PER_CHAR = 5
CHUNK_MS = 50
INVALID_KEY = {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}


def tone(chars: int, rate: int) -> bytes:
    n = max(1, int(rate * chars * MS_PER_CHAR / 1000))
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def pcm_rate(output_format: str) -> int:
    codec, _, rate = output_format.partition("_")
    assert codec == "pcm", f"the fake speaks only pcm_*, got {output_format!r}"
    return int(rate)


@dataclass
class FakeElevenLabs:
    api_key: str = "xi-test-key"
    reject: str | None = None  # None | "close" | "handshake"
    drop_after_chunks: int | None = None
    first_audio_delay_s: float = 0.0
    chunk_interval_s: float = 0.0
    """Pause between audio messages (0: as fast as the loop goes)."""
    websocket: bool = True
    send_final: bool = True
    """False: close 1000 after the audio without the ``isFinal`` message."""
    close_after_first_message: bool = False
    """Close 1000 right after the first message, no audio (a server that gives up at once)."""
    port: int = 0
    sockets: list[dict[str, Any]] = field(default_factory=list)
    """Per WebSocket: path, query, headers, messages received, audio messages sent, and when it
    was closed by the client ("closed_at", monotonic; None while open or when the server
    closed it)."""
    http_requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _key_ok(self, headers: Any, first: dict[str, Any] | None = None) -> bool:
        key = headers.get("xi-api-key") or (first or {}).get("xi_api_key")
        return self.reject is None and key == self.api_key

    # -- WebSocket ---------------------------------------------------------------------------
    async def _stream_input(self, ws: WebSocket) -> None:
        record: dict[str, Any] = {
            "voice_id": ws.path_params["voice_id"], "query": dict(ws.query_params),
            "headers": dict(ws.headers), "messages": [], "audio_sent": 0, "closed_at": None,
            "opened_at": time.monotonic()}
        self.sockets.append(record)
        if not self.websocket:  # a proxy that does not pass WebSocket upgrades on
            await ws.send_denial_response(Response("no WebSocket here", status_code=404))
            return
        if self.reject == "handshake" or (self.reject is None and
                                          ws.headers.get("xi-api-key") not in (None, self.api_key)):
            await ws.send_denial_response(JSONResponse(INVALID_KEY, status_code=401))
            return
        await ws.accept()
        rate = pcm_rate(ws.query_params.get("output_format", "mp3_44100_128"))
        pending, first_audio = "", True
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                record["messages"].append(msg)
                if len(record["messages"]) == 1:
                    if not self._key_ok(ws.headers, msg):
                        await ws.close(code=1008, reason="Invalid API key")
                        return
                    if self.close_after_first_message:
                        await ws.close(code=1000)
                        return
                    continue  # the first message (" ") only opens the input
                text = msg.get("text", "")
                pending += text
                end = text == ""
                # With a drop to come, all the text is voiced at the end of the input, so that
                # the client has sent everything before the connection ends (else its own sends
                # may fail first, before any audio, which is a different test).
                flush = msg.get("flush") or len(pending) >= 120
                if not (end or (flush and self.drop_after_chunks is None)):
                    continue
                if pending.strip():
                    if first_audio and self.first_audio_delay_s:
                        await asyncio.sleep(self.first_audio_delay_s)
                    first_audio = False
                    if not await self._send_audio(ws, record, pending, rate):
                        return
                pending = ""
                if end:
                    if self.send_final:
                        await ws.send_text(json.dumps({"isFinal": True}))
                    await ws.close(code=1000)
                    return
        except (WebSocketDisconnect, OSError, RuntimeError):  # the client went away
            record["closed_at"] = time.monotonic()

    async def _send_audio(self, ws: WebSocket, record: dict[str, Any], text: str,
                          rate: int) -> bool:
        pcm = tone(len(text.strip()), rate)
        step = rate * CHUNK_MS // 1000 * 2
        for i in range(0, len(pcm), step):
            if self.drop_after_chunks is not None and record["audio_sent"] >= self.drop_after_chunks:
                # No close frame: the TCP connection just ends (as when the server process
                # dies), after what was sent is delivered; abort() (a reset) could lose the
                # chunks before it in the client's socket buffer and make the test a race.
                ws._send.__self__.transport.close()  # type: ignore[attr-defined]
                return False
            chars = list(text)
            alignment = {"chars": chars, "charStartTimesMs": [k * MS_PER_CHAR for k in range(len(chars))],
                         "charDurationsMs": [MS_PER_CHAR] * len(chars)}
            await ws.send_text(json.dumps({
                "audio": base64.b64encode(pcm[i:i + step]).decode(), "isFinal": None,
                "normalizedAlignment": alignment if i == 0 else None,
                "alignment": alignment if i == 0 else None}))
            record["audio_sent"] += 1
            await asyncio.sleep(self.chunk_interval_s)
        return True

    # -- HTTP --------------------------------------------------------------------------------
    async def _stream(self, request: Request) -> Response:
        body = await request.json()
        self.http_requests.append({"path": request.url.path, "query": dict(request.query_params),
                                   "headers": dict(request.headers), "body": body})
        if not self._key_ok(request.headers):
            return JSONResponse(INVALID_KEY, status_code=401)
        rate = pcm_rate(request.query_params.get("output_format", "mp3_44100_128"))
        pcm = tone(len(body.get("text", "").strip()), rate)

        async def chunks():  # odd sizes on purpose: a sample may be split across chunks
            if self.first_audio_delay_s:
                await asyncio.sleep(self.first_audio_delay_s)
            step = rate * CHUNK_MS // 1000 * 2 + 1
            for i in range(0, len(pcm), step):
                yield pcm[i:i + step]
                await asyncio.sleep(0)
        return StreamingResponse(chunks(), media_type="audio/pcm")

    async def _voice(self, request: Request) -> Response:
        self.http_requests.append({"path": request.url.path, "headers": dict(request.headers)})
        if not self._key_ok(request.headers):
            return JSONResponse(INVALID_KEY, status_code=401)
        return JSONResponse({"voice_id": request.path_params["voice_id"], "name": "Fake"})

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> FakeElevenLabs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = Starlette(routes=[
            WebSocketRoute("/v1/text-to-speech/{voice_id}/stream-input", self._stream_input),
            Route("/v1/text-to-speech/{voice_id}/stream", self._stream, methods=["POST"]),
            Route("/v1/voices/{voice_id}", self._voice, methods=["GET"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="critical", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake ElevenLabs server did not start"
            time.sleep(0.02)
        return self

    def reset(self) -> None:
        self.reject, self.drop_after_chunks, self.first_audio_delay_s = None, None, 0.0
        self.chunk_interval_s = 0.0
        self.send_final, self.close_after_first_message = True, False
        self.websocket = True
        self.sockets.clear()
        self.http_requests.clear()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
