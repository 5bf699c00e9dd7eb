"""ElevenLabs streaming text to speech: ``voice.provider = "elevenlabs"``.

Over ElevenLabs' input-streaming WebSocket, ``{root}/v1/text-to-speech/{voice_id}/stream-input``
(``model_id`` and ``output_format=pcm_<rate>`` in the query, the key in the ``xi-api-key``
header): the first message opens the input (``{"text": " "}``), each sentence of the text goes
with ``flush: true`` (audio for a sentence is made at once, not when the server's buffer fills),
``{"text": ""}`` ends the input; the server answers base64 16-bit PCM in ``audio`` messages and
``isFinal: true`` at the end. Raw PCM (``pcm_*``) needs no decoder.

One socket per :meth:`synthesize` call. The pipeline calls it once per piece of a reply (a
clause or a sentence) from one task per session, and several sessions share this service: a
socket per call needs no routing of audio back to its caller, no keep-alive against the
server's 20 s inactivity timeout, and a barge-in just closes that call's socket (nothing left
half-read for the next reply). The cost is a handshake per piece (one TLS + upgrade round trip,
~50-150 ms from Europe or the US; not measured here: no internet), which the pipeline partly
hides, since it synthesizes the next piece while the previous one plays.

HTTP fallback: when the server answers the WebSocket upgrade with anything but 101 and not a
rejected key (a proxy without WebSocket support: 400, 404, 426, ...), the call goes to the
streaming HTTP endpoint ``POST {root}/v1/text-to-speech/{voice_id}/stream`` instead (raw PCM
body, read as it comes), and so do later calls; logged once.

Errors are typed: a rejected key (HTTP 401/403, or a close 1008 naming the key) is a
non-retryable :class:`ProviderError` naming ``voice.api_key``; a stream that closes before
``isFinal`` (a drop mid-utterance) and server errors are retryable. The key is never logged nor
put in an error message.

``voice.fallback = "local"``: while ElevenLabs fails, Piper speaks (see :class:`LocalFallback`).

The wire protocol's pieces (roots, PCM, messages, error bodies) are in tts_elevenlabs_wire.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from voice_agent.core.config import ConfigError, V3Config
from voice_agent.core.errors import ProviderError, ProviderTimeoutError
from voice_agent.services.fallback import FallbackSwitch
from voice_agent.services.base import AudioChunk, TTSService
from voice_agent.services.tts_elevenlabs_wire import (CLOSE_TIMEOUT_S, KEY_HINT, _close, _detail,
                                                      _message, _Pcm, looks_like_key_problem,
                                                      rejected_key, roots)
from voice_agent.services.tts_espeak import split_sentences

__all__ = ["CLOSE_TIMEOUT_S", "DEFAULT_MODEL", "DEFAULT_ROOT", "DEFAULT_VOICE_ID", "KEY_HINT",
           "ElevenLabsTTS", "LocalFallback", "looks_like_key_problem", "rejected_key", "roots"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = "wss://api.elevenlabs.io"
DEFAULT_MODEL = "eleven_flash_v2_5"
DEFAULT_VOICE_ID = "JBFqnCBsd6RMkjVDRZzb"  # "George", the voice of ElevenLabs' API examples


class _RedactKey(logging.Filter):
    """websockets logs the handshake's headers at debug level, the ``xi-api-key`` among them:
    its value is masked in every record of the logger handed to it."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secret:
            message = record.getMessage()
            if self.secret in message:
                record.msg, record.args = message.replace(self.secret, "***"), None
        return True


class _NoWebSocket(Exception):
    """The server answered the upgrade, but not with a WebSocket (a proxy, an old gateway)."""


class ElevenLabsTTS(TTSService):
    name = "elevenlabs"

    def __init__(self, config: V3Config) -> None:
        voice = config.voice
        if voice.api_key is None:
            raise ConfigError('voice.provider = "elevenlabs" needs an API key: set voice.api_key '
                              "(env VOICE_AGENT_VOICE__API_KEY)")
        self._key = voice.api_key
        self.ws_root, self.http_root = roots(voice.base_url or DEFAULT_ROOT)
        self.voice_id = voice.voice_id or DEFAULT_VOICE_ID
        self.model = voice.remote_model or DEFAULT_MODEL
        self.output_format = voice.output_format
        self.sample_rate = int(self.output_format.split("_", 1)[1])
        self.timeout_s = voice.timeout_s
        self.use_http = False
        """Set once the WebSocket upgrade was refused: every later call streams over HTTP."""
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.fallback = LocalFallback(config, self.name) if voice.fallback == "local" else None
        self._ws_log = logging.getLogger(f"{__name__}.websocket")
        if not any(isinstance(f, _RedactKey) and f.secret == self._key.get_secret_value()
                   for f in self._ws_log.filters):
            self._ws_log.addFilter(_RedactKey(self._key.get_secret_value()))

    # -- life cycle --------------------------------------------------------------------------
    def load(self) -> None:
        if self.fallback is not None:
            self.fallback.load()

    def warmup(self) -> None:
        """Check the key and the voice once at start-up (``GET /v1/voices/{voice_id}``, which
        costs no characters), so that a rejected key fails the start, not the first reply. An
        unreachable server only warns: it may be back by then (and the fallback speaks)."""
        if self.fallback is not None:
            self.fallback.warmup()
        url = f"{self.http_root}/v1/voices/{quote(self.voice_id, safe='')}"
        try:
            resp = httpx.get(url, headers=self._headers(), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            log.warning("elevenlabs: cannot reach %s at start-up (%s); trying again per reply",
                        self.http_root, type(exc).__name__)
            return
        if resp.status_code in (401, 403):
            detail = _detail(resp.text)
            if "missing_permissions" in detail:  # a key scoped to text to speech only
                log.info("elevenlabs: the key may not read voices; not checked at start-up")
                return
            raise rejected_key(self.name, f"HTTP {resp.status_code} {detail}")
        if resp.status_code == 404:
            raise ConfigError(f"elevenlabs: voice {self.voice_id!r} not found (voice.voice_id, "
                              "env VOICE_AGENT_VOICE__VOICE_ID)")
        if resp.status_code >= 400:
            log.warning("elevenlabs: start-up check got HTTP %d; trying again per reply",
                        resp.status_code)

    def close(self) -> None:
        self._client = None  # closed with its event loop, as the LLM adapter's
        if self.fallback is not None:
            self.fallback.close()

    def _headers(self) -> dict[str, str]:
        return {"xi-api-key": self._key.get_secret_value()}

    # -- synthesis ---------------------------------------------------------------------------
    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        # aclosing: a consumer that stops early (a barge-in) closes the socket now, not when
        # the garbage collector gets to the inner generator.
        stream = self._remote(text) if self.fallback is None else self.fallback.speak(
            text, self._remote)
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def _remote(self, text: str) -> AsyncIterator[AudioChunk]:
        if not self.use_http:
            try:
                async with aclosing(self._websocket(text)) as stream:
                    async for chunk in stream:
                        yield chunk
                return
            except _NoWebSocket as exc:
                log.warning("elevenlabs: no WebSocket at %s (%s): streaming over HTTP instead",
                            self.ws_root, exc)
                self.use_http = True
        async with aclosing(self._http_stream(text)) as stream:
            async for chunk in stream:
                yield chunk

    async def _websocket(self, text: str) -> AsyncIterator[AudioChunk]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import (ConnectionClosed, InvalidHandshake, InvalidStatus)

        query = urlencode({"model_id": self.model, "output_format": self.output_format})
        url = (f"{self.ws_root}/v1/text-to-speech/{quote(self.voice_id, safe='')}"
               f"/stream-input?{query}")
        try:
            async with asyncio.timeout(self.timeout_s):
                ws = await connect(url, additional_headers=self._headers(), open_timeout=None,
                                   close_timeout=CLOSE_TIMEOUT_S, ping_interval=None,
                                   compression=None, max_size=2**24, logger=self._ws_log)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise rejected_key(self.name, f"HTTP {status} "
                                   f"{_detail(exc.response.body or b'')}") from None
            if status >= 500 or status == 429:
                raise ProviderError(self.name, f"WebSocket upgrade refused: HTTP {status}") from None
            raise _NoWebSocket(f"HTTP {status}") from None
        except InvalidHandshake as exc:
            raise _NoWebSocket(type(exc).__name__) from None
        except TimeoutError:
            raise ProviderTimeoutError(self.name, f"no connection within {self.timeout_s:g}s") from None
        except OSError as exc:
            raise ProviderError(self.name, f"cannot connect to {self.ws_root}: "
                                f"{type(exc).__name__}") from None
        pcm, sent = _Pcm(self.sample_rate), 0
        try:
            try:
                await ws.send(json.dumps({"text": " "}))
                for sentence in split_sentences(text) or [text.strip()]:
                    await ws.send(json.dumps({"text": sentence + " ", "flush": True}))
                await ws.send(json.dumps({"text": ""}))
                while True:
                    # Each wait for a message, the first audio's included, is bounded by
                    # voice.timeout_s; the pipeline bounds the whole piece as well.
                    async with asyncio.timeout(self.timeout_s):
                        raw = await ws.recv()
                    msg = _message(raw)
                    if msg.get("audio"):
                        chunk = pcm.chunk(base64.b64decode(msg["audio"]))
                        if chunk is not None:
                            sent += 1
                            yield chunk
                    if msg.get("isFinal"):
                        return
                    error = msg.get("error") or (msg.get("message") if not msg.get("audio")
                                                 and "isFinal" not in msg else None)
                    if error:
                        raise self._error(str(error), sent)
            except ConnectionClosed as exc:
                frame = exc.rcvd
                if frame is not None and frame.code == 1000 and sent:
                    # A normal close after audio, the input ended: complete, just without the
                    # isFinal message (tolerated rather than failing a whole reply on it).
                    log.debug("elevenlabs: closed normally without isFinal after %d chunks", sent)
                    return
                raise self._closed(exc, sent) from None
            except TimeoutError:
                raise ProviderTimeoutError(self.name, f"no audio within {self.timeout_s:g}s "
                                           f"after {sent} chunks") from None
        finally:
            await _close(ws)

    def _error(self, error: str, sent: int) -> ProviderError:
        if looks_like_key_problem(error):
            return rejected_key(self.name, error[:200])
        return ProviderError(self.name, f"server error after {sent} audio chunks: {error[:200]}")

    def _closed(self, exc: Any, sent: int) -> ProviderError:
        """A close before ``isFinal``: a rejected key (1008 naming it), or a cut stream."""
        frame = exc.rcvd
        code, reason = (frame.code, frame.reason) if frame is not None else (1006, "")
        if code == 1008 and looks_like_key_problem(reason):
            return rejected_key(self.name, f"WebSocket closed {code} {reason[:200]}")
        what = "dropped" if frame is None else f"closed {code} {reason[:200]}".strip()
        return ProviderError(self.name, f"stream {what} before isFinal, after {sent} "
                             "audio chunks")

    async def _http_stream(self, text: str) -> AsyncIterator[AudioChunk]:
        url = f"/v1/text-to-speech/{quote(self.voice_id, safe='')}/stream"
        pcm, sent = _Pcm(self.sample_rate), 0
        try:
            async with self._http().stream(
                    "POST", url, params={"output_format": self.output_format},
                    json={"text": text, "model_id": self.model}) as resp:
                if resp.status_code >= 400:
                    detail = _detail(await resp.aread())
                    if resp.status_code in (401, 403):
                        raise rejected_key(self.name, f"HTTP {resp.status_code} {detail}")
                    retryable = resp.status_code >= 500 or resp.status_code == 429
                    raise ProviderError(self.name, f"HTTP {resp.status_code}: {detail}",
                                        retryable=retryable)
                async for data in resp.aiter_bytes():
                    chunk = pcm.chunk(data)
                    if chunk is not None:
                        sent += 1
                        yield chunk
        except httpx.TimeoutException:
            raise ProviderTimeoutError(self.name, f"no answer within {self.timeout_s:g}s "
                                       f"after {sent} chunks") from None
        except httpx.HTTPError as exc:
            # Never echo the request (its headers carry the key): the class and root are enough.
            raise ProviderError(self.name, f"{type(exc).__name__} talking to {self.http_root} "
                                f"after {sent} chunks") from None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.http_root, headers=self._headers(),
                timeout=httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s)))
            self._client_loop = loop
        return self._client


class LocalFallback(FallbackSwitch):
    """``voice.fallback = "local"``: Piper speaks while the cloud TTS fails.

    A call whose cloud stream fails before its first audio (down, slow past the timeouts, a
    rejected key) is spoken by Piper instead, and so is every call for the next
    ``recovery.reset_timeout_s`` (at least 5 s); then the cloud gets the next call again. A
    failure after audio went out is raised as it is (the pipeline's apology). Entering and
    leaving the fallback are logged; :meth:`status` is what /v3/health shows."""

    def __init__(self, config: V3Config, remote_name: str) -> None:
        from voice_agent.services.tts_piper import PiperTTS

        super().__init__(config, remote_name, "piper", "tts", "speaking")
        self.local: TTSService = PiperTTS(config)

    def load(self) -> None:
        self.local.load()

    def warmup(self) -> None:
        self.local.warmup()

    def close(self) -> None:
        self.local.close()

    async def speak(self, text: str, remote: Any) -> AsyncIterator[AudioChunk]:
        if self.holding:
            async with aclosing(self._local(text)) as local:
                async for chunk in local:
                    yield chunk
            return
        started = False
        try:
            async with aclosing(remote(text)) as stream:
                async for chunk in stream:
                    started = True
                    yield chunk
        except ProviderError as exc:
            if started:
                raise
            self.enter(exc)
            async with aclosing(self._local(text)) as local:
                async for chunk in local:
                    yield chunk
            return
        self.leave()

    async def _local(self, text: str) -> AsyncIterator[AudioChunk]:
        self.calls += 1
        async with aclosing(self.local.synthesize(text)) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                yield chunk
