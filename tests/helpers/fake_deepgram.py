"""A stand-in for Deepgram's live speech-to-text API on loopback, speaking its documented
WebSocket protocol: ``GET /v1/listen?encoding=linear16&sample_rate=...&channels=...&model=...``
with ``Authorization: Token <key>`` (HTTP 401 otherwise, with Deepgram's error body); binary
audio frames in; JSON control messages in (``KeepAlive``, ``Finalize``, ``CloseStream``); JSON
out: ``Results`` (``channel.alternatives[0].transcript``, ``is_final``, ``speech_final``,
``from_finalize``, ``start``, ``duration``), ``UtteranceEnd`` (``last_word_end``) and
``Metadata`` when the stream closes.

Its "recognition" is scripted (a fake of a paid remote service): the test says which words
the utterance holds (``words``); one more word shows in an interim every ``interim_every_s`` of
audio received, the words so far are made final (``is_final``) every ``final_every_s``, and a
``Finalize`` makes every word left final (``from_finalize``). With ``endpointing`` in the query,
``speech_final`` comes with the last words once ``speech_ends_s`` of audio arrived, then an
``UtteranceEnd``. It can drop the connection mid-utterance (``drop_after_s``, for ``drops``
connections) and hold back its first result (``first_result_delay_s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

BYTES_PER_S = 16_000 * 2  # linear16 mono at 16 kHz
LOGGER = "tests.fake_deepgram"
"""The fake's websockets logger: it logs the headers it got, the key included, as a server
would; tests that look for keys in the agent's logs leave it out."""


@dataclass
class Connection:
    """What one client connection sent."""

    auth: str | None
    query: dict[str, str]
    audio_bytes: int = 0
    control: list[str] = field(default_factory=list)
    """The ``type`` of each JSON message received, in order."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed_by_client: bool = False


@dataclass
class FakeDeepgram:
    key: str = "dg-test-key"
    words: list[str] = field(default_factory=lambda: "what is the capital of france".split())
    interim_every_s: float = 0.3
    final_every_s: float = 1.2
    speech_ends_s: float | None = None
    """With ``endpointing`` in the query: speech_final (and UtteranceEnd) after this much audio."""
    first_result_delay_s: float = 0.0
    drop_after_s: float | None = None
    drops: int = 1
    """How many connections are dropped at ``drop_after_s`` (-1: every one)."""
    connections: list[Connection] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -- the server ---------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/v1/listen":
            return _json_response(HTTPStatus.NOT_FOUND, {"err_code": "NOT_FOUND",
                                                         "err_msg": "Not found."})
        if request.headers.get("Authorization") != f"Token {self.key}":
            return _json_response(HTTPStatus.UNAUTHORIZED, {
                "err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.",
                "request_id": str(uuid.uuid4())})
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self._handlers.add(asyncio.current_task())
        query = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        conn = Connection(ws.request.headers.get("Authorization"), query)
        self.connections.append(conn)
        drop = self.drop_after_s is not None and self.drops != 0
        if drop and self.drops > 0:
            self.drops -= 1
        state = _Utterance(self, conn, ws)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    conn.audio_bytes += len(message)
                    if drop and conn.audio_bytes >= self.drop_after_s * BYTES_PER_S:
                        ws.transport.abort()  # no close frame: a dropped connection
                        return
                    await state.on_audio()
                    continue
                kind = json.loads(message).get("type")
                conn.control.append(kind)
                if kind == "Finalize":
                    await state.finalize()
                elif kind == "CloseStream":
                    conn.closed_by_client = True
                    await state.close_stream()
                    await ws.close()
                    return
        except ConnectionClosed:
            pass
        finally:
            self._handlers.discard(asyncio.current_task())

    def start(self) -> FakeDeepgram:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()

            async def main() -> None:
                self._stop = asyncio.Event()
                self._handlers: set[asyncio.Task] = set()
                async with serve(self._handler, "127.0.0.1", 0,
                                 process_request=self._process_request, compression=None,
                                 logger=logging.getLogger(LOGGER)) as srv:
                    self.port = srv.sockets[0].getsockname()[1]
                    ready.set()
                    await self._stop.wait()

            self._loop.run_until_complete(main())

        self._thread = threading.Thread(target=run, daemon=True, name="fake-deepgram")
        self._thread.start()
        assert ready.wait(10), "fake Deepgram server did not start"
        return self

    def stop(self) -> None:
        def stop() -> None:
            for task in list(self._handlers):  # one held back by first_result_delay_s
                task.cancel()
            self._stop.set()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(timeout=5)

    def reset(self, **settings: Any) -> None:
        """Back to the defaults, then ``settings``; forget earlier connections."""
        fresh = FakeDeepgram()
        for name in ("key", "words", "interim_every_s", "final_every_s", "speech_ends_s",
                     "first_result_delay_s", "drop_after_s", "drops"):
            setattr(self, name, settings.pop(name, getattr(fresh, name)))
        assert not settings, f"unknown settings {settings}"
        self.connections = []


class _Utterance:
    """The scripted recognition of one connection."""

    def __init__(self, fake: FakeDeepgram, conn: Connection, ws: ServerConnection) -> None:
        self.fake, self.conn, self.ws = fake, conn, ws
        self.shown = 0  # words shown so far (interim or final)
        self.final = 0  # words made final so far
        self.final_at_s = 0.0  # where the current segment starts
        self.next_interim_s = fake.interim_every_s
        self.next_final_s = fake.final_every_s
        self.first = True
        self.spoke_final = False

    @property
    def audio_s(self) -> float:
        return self.conn.audio_bytes / BYTES_PER_S

    async def on_audio(self) -> None:
        fake, now = self.fake, self.audio_s
        ends = fake.speech_ends_s
        if ("endpointing" in self.conn.query and ends is not None and now >= ends
                and not self.spoke_final):
            self.spoke_final = True
            self.shown = len(fake.words)
            await self.results(is_final=True, speech_final=True, end_s=ends)
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": ends})
            return
        if now >= self.next_final_s and self.shown > self.final:
            self.next_final_s += fake.final_every_s
            await self.results(is_final=True, end_s=now)
        elif now >= self.next_interim_s:
            self.next_interim_s += fake.interim_every_s
            if self.shown < len(fake.words):
                self.shown += 1
                await self.results(is_final=False, end_s=now)

    async def finalize(self) -> None:
        self.shown = len(self.fake.words)
        await self.results(is_final=True, from_finalize=True, end_s=self.audio_s)

    async def close_stream(self) -> None:
        await self.send({"type": "Metadata", "transaction_key": "deprecated",
                         "request_id": str(uuid.uuid4()), "sha256": "0" * 64,
                         "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                         "duration": self.audio_s, "channels": 1, "models": [],
                         "model_info": {}})

    async def results(self, *, is_final: bool, end_s: float, speech_final: bool = False,
                      from_finalize: bool = False) -> None:
        words = self.fake.words[self.final:self.shown]
        start = self.final_at_s
        if is_final:
            self.final, self.final_at_s = self.shown, end_s
        msg = {
            "type": "Results", "channel_index": [0, 1], "duration": round(end_s - start, 3),
            "start": round(start, 3), "is_final": is_final, "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": " ".join(words), "confidence": 0.98,
                                          "words": [{"word": w, "start": start, "end": end_s,
                                                     "confidence": 0.98, "punctuated_word": w}
                                                    for w in words]}]},
            "metadata": {"request_id": str(uuid.uuid4()),
                         "model_info": {"name": self.conn.query.get("model", ""),
                                        "version": "fake", "arch": "fake"},
                         "model_uuid": str(uuid.uuid4())},
        }
        await self.send(msg)

    async def send(self, msg: dict[str, Any]) -> None:
        if self.first:
            self.first = False
            await asyncio.sleep(self.fake.first_result_delay_s)
        self.conn.sent.append(msg)
        await self.ws.send(json.dumps(msg))


def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       ("dg-error", body.get("err_msg", ""))])
    return Response(status.value, status.phrase, headers, data)
