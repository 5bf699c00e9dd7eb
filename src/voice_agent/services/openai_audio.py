"""OpenAI-compatible audio servers: ``voice.provider = "openai"`` and ``stt.provider = "openai"``.

For self-hosted model servers that speak OpenAI's audio API (and OpenAI itself):

* text to speech, ``POST {voice.base_url}/audio/speech`` with JSON ``{"model", "voice",
  "input", "response_format": "pcm"}``: OpenAI documents ``pcm`` as raw 24 kHz 16-bit signed
  little-endian samples without a header; the body is read as it streams. A server that answers
  a WAV instead (``RIFF`` header) is read by its header's rate. Defaults: base
  ``http://127.0.0.1:8000/v1``, model ``tts-1``, voice ``alloy`` (voice.remote_model,
  voice.voice_id).
* speech to text, ``POST {stt.base_url}/audio/transcriptions`` as multipart form: ``file`` (a
  16 kHz mono 16-bit WAV), ``model``, ``language``, ``response_format=json``; the answer is
  ``{"text": ...}``. A batch model: interims re-send the growing utterance, and are skipped
  while a request is in flight (:attr:`busy`); BufferedSTTStream does the rest. Defaults: base
  ``http://127.0.0.1:8000/v1`` unless stt.base_url is set, model ``whisper-1`` unless
  stt.remote_model is set (stt.api_key, stt.base_url, stt.remote_model are shared with the
  other cloud STT providers; stt.model stays Whisper's).

``voice.fallback = "local"`` speaks with Piper while the speech server fails, as for ElevenLabs
(tts_elevenlabs.LocalFallback). The key is optional (a local server may need none); when set it goes as ``Authorization:
Bearer``. HTTP 401/403 is a non-retryable error naming the key's setting; 5xx and 429 are
retryable; other 4xx are not. The key is never logged nor put in a message.
"""

from __future__ import annotations

import asyncio
import io
import logging
import struct
import wave
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from pydantic import SecretStr

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ProviderError, ProviderTimeoutError
from voice_agent.services.base import STT_SAMPLE_RATE, AudioChunk, STTService, Transcript, TTSService
from voice_agent.services.tts_elevenlabs import LocalFallback

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_TTS_MODEL = "tts-1"
DEFAULT_VOICE = "alloy"
DEFAULT_STT_MODEL = "whisper-1"
PCM_RATE = 24_000
"""OpenAI's ``response_format: "pcm"``: 24 kHz, 16-bit signed, little-endian, mono."""


def http_base(url: str) -> str:
    """``url`` with ws:// as http:// and wss:// as https:// (the cloud roots accept all four)."""
    parts = urlsplit(url.rstrip("/"))
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    return urlunsplit(parts._replace(scheme=scheme))


def bearer(api_key: SecretStr | None) -> dict[str, str]:
    return {} if api_key is None else {"Authorization": f"Bearer {api_key.get_secret_value()}"}


def http_error(provider: str, status: int, body: bytes | str, key_hint: str) -> ProviderError:
    text = (body.decode(errors="replace") if isinstance(body, bytes) else body).strip()[:200]
    if status in (401, 403):
        return ProviderError(provider, f"the API key was rejected (HTTP {status} {text}): "
                             f"check {key_hint}", retryable=False)
    return ProviderError(provider, f"HTTP {status}: {text}",
                         retryable=status >= 500 or status == 429)


def check_key(provider: str, url: str, api_key: SecretStr | None, key_hint: str, *,
              timeout_s: float = 10.0) -> None:
    """Start-up check (blocking, from a provider's warm-up): ``GET url`` (a ``/models`` list,
    which costs nothing). A rejected key raises a non-retryable :class:`ProviderError`; an
    unreachable server or any other answer only warns (it may be up by the first turn, and a
    self-hosted server may have no such route)."""
    try:
        resp = httpx.get(url, headers=bearer(api_key), timeout=timeout_s)
    except httpx.HTTPError as exc:
        log.warning("%s: cannot reach %s at start-up (%s); trying again per call", provider,
                    url, type(exc).__name__)
        return
    if resp.status_code in (401, 403):
        raise http_error(provider, resp.status_code, resp.text, key_hint)
    if resp.status_code >= 400:
        log.info("%s: start-up check %s answered HTTP %d; not checked", provider, url,
                 resp.status_code)


class _Client:
    """One httpx.AsyncClient per event loop (a service outlives loops in tests and the CLI)."""

    def __init__(self, base_url: str, api_key: SecretStr | None, timeout_s: float) -> None:
        self.base_url, self._key, self.timeout_s = base_url, api_key, timeout_s
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=bearer(self._key),
                timeout=httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s)))
            self._loop = loop
        return self._client

    def drop(self) -> None:
        self._client = None


class _Pcm:
    """Raw 16-bit PCM bytes, or a WAV whose header gives the rate, to AudioChunks."""

    def __init__(self, rate: int) -> None:
        self.rate, self._buf, self._header_done = rate, b"", False

    def push(self, data: bytes) -> AudioChunk | None:
        data = self._buf + data
        if not self._header_done:
            if len(data) < 4 or (data[:4] == b"RIFF" and b"data" not in data[12:]):
                self._buf = data  # wait for the whole header
                return None
            if data[:4] == b"RIFF":
                data = self._wav_header(data)
            self._header_done = True
        cut = len(data) - len(data) % 2
        self._buf = data[cut:]
        if not cut:
            return None
        return AudioChunk(pcm=np.frombuffer(data[:cut], dtype="<i2").astype(np.int16),
                          sample_rate=self.rate)

    def _wav_header(self, data: bytes) -> bytes:
        pos = 12
        while pos + 8 <= len(data):
            tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
            if tag == b"fmt ":
                _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[pos + 8:pos + 24])
                if channels != 1 or bits != 16:
                    raise ProviderError("openai", f"a WAV of {channels} channels at {bits} "
                                        "bits; expected mono 16-bit", retryable=False)
                self.rate = rate
            if tag == b"data":
                return data[pos + 8:]
            pos += 8 + size
        raise ProviderError("openai", "a WAV answer without a data chunk", retryable=False)


class OpenAICompatibleTTS(TTSService):
    name = "openai-tts"
    sample_rate = PCM_RATE
    key_hint = "voice.api_key, env VOICE_AGENT_VOICE__API_KEY"

    def __init__(self, config: V3Config) -> None:
        voice = config.voice
        self.base_url = http_base(voice.base_url or DEFAULT_BASE_URL)
        self.model = voice.remote_model or DEFAULT_TTS_MODEL
        self.voice = voice.voice_id or DEFAULT_VOICE
        self.speed = voice.speed
        self._key = voice.api_key
        self._http = _Client(self.base_url, voice.api_key, voice.timeout_s)
        self.fallback: LocalFallback | None = None
        if voice.fallback == "local":  # Piper while the server fails (as for ElevenLabs)
            self.fallback = LocalFallback(config, self.name)

    def load(self) -> None:
        """Nothing to load but the fallback; the key (if any) is checked in :meth:`warmup`."""
        if self.fallback is not None:
            self.fallback.load()

    def warmup(self) -> None:
        if self.fallback is not None:
            self.fallback.warmup()
        check_key(self.name, f"{self.base_url}/models", self._key, self.key_hint,
                  timeout_s=self._http.timeout_s)

    def close(self) -> None:
        self._http.drop()
        if self.fallback is not None:
            self.fallback.close()

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        stream = (self._remote(text) if self.fallback is None
                  else self.fallback.speak(text, self._remote))
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def _remote(self, text: str) -> AsyncIterator[AudioChunk]:
        body: dict[str, Any] = {"model": self.model, "voice": self.voice, "input": text,
                                "response_format": "pcm"}
        if self.speed != 1.0:
            body["speed"] = self.speed
        pcm = _Pcm(PCM_RATE)
        try:
            async with self._http.get().stream("POST", "/audio/speech", json=body) as resp:
                if resp.status_code >= 400:
                    raise http_error(self.name, resp.status_code, await resp.aread(),
                                     self.key_hint)
                async for data in resp.aiter_bytes():
                    chunk = pcm.push(data)
                    if chunk is not None:
                        yield chunk
        except httpx.TimeoutException:
            raise ProviderTimeoutError(self.name, f"no answer within {self._http.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            # Never echo the request (its headers carry the key): the class and URL are enough.
            raise ProviderError(self.name, f"{type(exc).__name__} talking to {self.base_url}") from None


class OpenAICompatibleSTT(STTService):
    name = "openai-stt"
    key_hint = "stt.api_key, env VOICE_AGENT_STT__API_KEY"

    def __init__(self, config: V3Config) -> None:
        stt = config.stt
        explicit = stt.model_fields_set
        # stt.base_url / stt.remote_model have the first cloud STT's defaults (Deepgram's):
        # unless set, this provider uses its own.
        base = getattr(stt, "base_url", None) if "base_url" in explicit else None
        model = getattr(stt, "remote_model", None) if "remote_model" in explicit else None
        self.base_url = http_base(base or DEFAULT_BASE_URL)
        self.model = model or DEFAULT_STT_MODEL
        self.language = stt.language
        self._key: SecretStr | None = getattr(stt, "api_key", None)
        self._http = _Client(self.base_url, self._key, float(getattr(stt, "timeout_s", 30.0)))
        self._in_flight = 0

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    def load(self) -> None:
        """Nothing to load; the key (if any) is checked in :meth:`warmup`."""

    def warmup(self) -> None:
        check_key(self.name, f"{self.base_url}/models", self._key, self.key_hint,
                  timeout_s=self._http.timeout_s)

    def close(self) -> None:
        self._http.drop()

    async def transcribe(self, audio: np.ndarray, *, final: bool = True) -> Transcript:
        files = {"file": ("speech.wav", wav_bytes(audio), "audio/wav")}
        data = {"model": self.model, "response_format": "json"}
        if self.language:
            data["language"] = self.language
        self._in_flight += 1
        try:
            resp = await self._http.get().post("/audio/transcriptions", files=files, data=data)
        except httpx.TimeoutException:
            raise ProviderTimeoutError(self.name, f"no answer within {self._http.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise ProviderError(self.name, f"{type(exc).__name__} talking to {self.base_url}") from None
        finally:
            self._in_flight -= 1
        if resp.status_code >= 400:
            raise http_error(self.name, resp.status_code, resp.content, self.key_hint)
        try:
            text = resp.json()["text"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(self.name, "an answer without text") from None
        return Transcript(text=str(text).strip(), final=final)


def wav_bytes(audio: np.ndarray) -> bytes:
    """float32 16 kHz mono in [-1, 1] as a 16-bit WAV file."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(STT_SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


__all__ = ["OpenAICompatibleSTT", "OpenAICompatibleTTS", "check_key", "wav_bytes"]
