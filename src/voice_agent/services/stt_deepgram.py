"""Deepgram live speech to text over its WebSocket API, behind the same stream interface as
Whisper (``stt.provider = "deepgram"``; docs/providers.md).

Wire protocol (Deepgram's documented live API): ``GET {stt.base_url}/v1/listen`` with the query
``encoding=linear16&sample_rate=16000&channels=1&model={stt.remote_model}&interim_results=true``
(plus ``endpointing``/``utterance_end_ms`` with ``stt.provider_endpointing``), header
``Authorization: Token <stt.api_key>``. Audio goes out as binary frames; text frames are JSON
control messages: ``{"type": "KeepAlive"}``, ``{"type": "Finalize"}``, ``{"type":
"CloseStream"}``. Deepgram answers ``Results`` (``channel.alternatives[0].transcript``,
``is_final``, ``speech_final``, ``from_finalize``, ``start``, ``duration``), ``UtteranceEnd``
(``last_word_end``) and, when the stream closes, ``Metadata``.

One connection per utterance, opened when the stream is created (at the start of speech): the
pipeline makes one :class:`STTStream` per utterance and Deepgram's ``start``/``duration`` are
seconds from the connection's first audio, which is then the stream's first sample, as the
interface wants. Opening a socket (TCP + TLS + upgrade, ~100-300 ms to a real region) overlaps
the speech itself: audio fed meanwhile is queued and sent once open, and the final is asked for
only after the end of the turn, so the handshake is not on the reply's path; a connection per
session would instead sit idle between turns, needing a ``KeepAlive`` every few seconds for
minutes, and its timestamps would need rebasing per utterance. While a stream is open and
nothing was sent for ``KEEPALIVE_S`` a ``KeepAlive`` goes out (Deepgram closes a silent
connection after ~10 s).

Interims are cumulative, as Whisper's are: every ``is_final`` segment so far plus the latest
interim segment, from the utterance's start; a *decisive* interim (asked for at a pause) is a
``Finalize`` mid-stream, answered with finalized text. ``finalize`` sends ``Finalize`` then
``CloseStream``; the final transcript (the ``is_final`` segments joined) is pushed when the
``Results`` with ``from_finalize`` arrives (or ``Metadata``, or a normal close: Deepgram may not
answer a Finalize with nothing buffered). A connection lost before that fails the first try of
the final; the pipeline's ``final_call`` (retries, breaker) then re-sends the utterance's audio
over a fresh connection, so a stream that drops mid-utterance is either transcribed again or
ends in ``SpeechFailure(final=True)`` (and the pipeline's apology). A rejected key (HTTP
401/403) is not retryable and says which env var to fix.

``stt.fallback = "local"``: a final that fails whatever the retries (down, dropped, rejected
key, open circuit) is transcribed by Whisper from the utterance's audio instead, and every
utterance of the next ``recovery.reset_timeout_s`` (at least 5 s) goes to Whisper from the
start; then Deepgram gets the next one again (:class:`LocalFallback`).

The connection's wire protocol is in stt_deepgram_wire.py, the stream of one utterance in
stt_deepgram_stream.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from voice_agent.core.config import ConfigError, V3Config
from voice_agent.core.errors import ProviderError, ProviderTimeoutError
from voice_agent.services.fallback import FallbackSwitch
from voice_agent.services.base import STT_SAMPLE_RATE, STTService, Transcript
from voice_agent.services.stt_deepgram_stream import DeepgramStream
from voice_agent.services.stt_deepgram_wire import (CLOSE_S, CLOSE_STREAM, FINALIZE, KEEPALIVE,
                                                    _close, _closed_errors, _error_message, _json,
                                                    _lost, _transcript, listen_url, to_linear16)
from voice_agent.services.stt_stream import FinalCall, ResultSink, STTStream

__all__ = ["CLOSE_S", "CLOSE_STREAM", "FINALIZE", "KEEPALIVE", "KEEPALIVE_S", "KEY_ENV",
           "DeepgramSTT", "DeepgramStream", "LocalFallback", "listen_url", "to_linear16"]

log = logging.getLogger(__name__)

KEEPALIVE_S = 5.0
"""A KeepAlive goes out after this long without audio (Deepgram: within 10 s)."""
KEY_ENV = "VOICE_AGENT_STT__API_KEY"


class _NoKeyInLogs(logging.Filter):
    """websockets logs the handshake's headers at debug level: hide the Authorization one."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str) \
                and args[0].lower() == "authorization":
            record.args = (args[0], "***")
        return True


_ws_log = logging.getLogger(__name__ + ".websocket")
_ws_log.addFilter(_NoKeyInLogs())


class DeepgramSTT(STTService):
    name = "deepgram"

    def __init__(self, config: V3Config) -> None:
        cfg = config.stt
        if cfg.api_key is None:
            raise ConfigError(f'stt.provider = "deepgram" needs a Deepgram API key: set '
                              f"{KEY_ENV} (or [stt] api_key in the config file)")
        self._config = config
        self._key = cfg.api_key
        self.base_url = cfg.base_url
        self.timeout_s = cfg.timeout_s
        self.endpointing = cfg.provider_endpointing
        self.keepalive_s = KEEPALIVE_S
        self.last_error: str | None = None
        """The last connection error (no key in it), for whoever wants to show it."""
        self.fallback = LocalFallback(config, self.name) if cfg.fallback == "local" else None

    @property
    def busy(self) -> bool:
        """Deepgram serves any number of streams; Whisper, while it stands in, one at a time."""
        return self.fallback is not None and self.fallback.active and self.fallback.local.busy

    # -- life cycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """Nothing to load for Deepgram (connections are opened per utterance, in the event
        loop); the local fallback's Whisper, when configured."""
        if self.fallback is not None:
            self.fallback.local.load()

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.local.close()

    def warmup(self) -> None:
        """Check the key at start-up (blocking, in the loader's thread): a key Deepgram refuses
        fails the start with a clear error; an unreachable service only logs a warning (the
        breaker and retries handle it per turn)."""
        if self.fallback is not None:
            self.fallback.local.warmup()
        try:
            asyncio.run(self._probe())
        except ProviderError as exc:
            if not exc.retryable:
                raise
            log.warning("deepgram not reachable at start-up (%s); going on", exc)

    async def _probe(self) -> None:
        ws = await self.connect()
        try:
            await ws.send(CLOSE_STREAM)
        finally:
            await ws.close()

    # -- connections --------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        cfg = self._config.stt
        params: dict[str, Any] = {
            "encoding": "linear16", "sample_rate": STT_SAMPLE_RATE, "channels": 1,
            "model": cfg.remote_model, "language": cfg.language, "punctuate": "true",
            "interim_results": "true",
        }
        if cfg.provider_endpointing:
            params["endpointing"] = cfg.end_of_turn_silence_ms
            params["utterance_end_ms"] = max(1000, cfg.end_of_turn_silence_ms)  # its minimum
        return params

    @property
    def url(self) -> str:
        return listen_url(self.base_url, self.params())

    async def connect(self) -> Any:
        """An open WebSocket to ``/v1/listen``, or a :class:`ProviderError` that names the
        problem (never the key)."""
        from websockets.asyncio.client import connect  # the provider's import, when chosen
        from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

        headers = {"Authorization": f"Token {self._key.get_secret_value()}"}
        try:
            async with asyncio.timeout(self.timeout_s):
                return await connect(self.url, additional_headers=headers, compression=None,
                                     open_timeout=None, close_timeout=CLOSE_S,
                                     logger=_ws_log, user_agent_header="voice-agent")
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                error = ProviderError(self.name, f"Deepgram refused the API key (HTTP {status}): "
                                      f"check {KEY_ENV}", retryable=False)
            else:
                body = (exc.response.body or b"").decode(errors="replace")[:200]
                error = ProviderError(self.name, f"HTTP {status} from {self.base_url}: {body}",
                                      retryable=status >= 500 or status == 429)
        except TimeoutError:
            error = ProviderTimeoutError(self.name, f"no connection to {self.base_url} within "
                                         f"{self.timeout_s:g}s")
        except InvalidURI:
            error = ProviderError(self.name, f"bad stt.base_url {self.base_url!r}", retryable=False)
        except (OSError, WebSocketException) as exc:
            error = ProviderError(self.name, f"{type(exc).__name__} connecting to {self.base_url}")
        self.last_error = str(error)  # logged by whoever handles it (recovery, the pipeline)
        raise error

    # -- the STT interface --------------------------------------------------------------------

    def create_stream(self, on_result: ResultSink, *,
                      final_call: FinalCall | None = None) -> STTStream:
        if self.fallback is not None and self.fallback.holding:
            # Whisper's own stream; no final_call: Deepgram's breaker must not refuse it.
            return self.fallback.stream(on_result)
        return DeepgramStream(self, on_result, final_call=final_call)

    async def transcribe(self, audio: np.ndarray, *, final: bool = True) -> Transcript:
        """The whole of ``audio`` over one connection: sent, finalized, its final text."""
        if self.fallback is not None and self.fallback.holding:
            return await self.fallback.transcribe(audio, final=final)
        try:
            text = await self.transcribe_pcm(to_linear16(audio))
        except ProviderError as exc:
            if self.fallback is None:
                raise
            self.fallback.enter(exc)
            return await self.fallback.transcribe(audio, final=final)
        if self.fallback is not None:
            self.fallback.leave()
        return Transcript(text, final=final)

    async def transcribe_pcm(self, pcm: bytes) -> str:
        ws = await self.connect()
        segments: list[str] = []
        try:
            async with asyncio.timeout(self.timeout_s + len(pcm) / (2 * STT_SAMPLE_RATE)):
                step = STT_SAMPLE_RATE // 5 * 2  # 200 ms per frame
                for at in range(0, len(pcm), step):
                    await ws.send(pcm[at:at + step])
                await ws.send(FINALIZE)
                await ws.send(CLOSE_STREAM)
                async for message in ws:
                    msg = _json(message)
                    kind = msg.get("type")
                    if kind == "Results" and msg.get("is_final"):
                        text = _transcript(msg)
                        if text:
                            segments.append(text)
                        if msg.get("from_finalize"):
                            break
                    elif kind == "Metadata":
                        break
                    elif kind == "Error":
                        raise _error_message(self.name, msg)
        except TimeoutError:
            raise ProviderTimeoutError(self.name, "no final transcript within "
                                       f"{self.timeout_s:g}s") from None
        except _closed_errors() as exc:
            raise _lost(self.name, exc) from None
        finally:
            await _close(ws)
        return " ".join(segments)


class LocalFallback(FallbackSwitch):
    """``stt.fallback = "local"``: Whisper transcribes while Deepgram fails.

    Entered when a final fails whatever the retries; for the next ``hold_s`` every new
    utterance goes to Whisper from its start; the first Deepgram final that succeeds after
    that leaves it."""

    def __init__(self, config: V3Config, remote_name: str) -> None:
        from voice_agent.services.stt_whisper import WhisperSTT  # loaded only when configured

        super().__init__(config, remote_name, "whisper", "stt", "transcribing")
        self.local: STTService = WhisperSTT(config)

    def stream(self, on_result: ResultSink) -> STTStream:
        self.calls += 1
        return self.local.create_stream(on_result)

    async def transcribe(self, audio: np.ndarray, *, final: bool) -> Transcript:
        self.calls += 1
        try:
            return await self.local.transcribe(audio, final=final)
        except ProviderError:
            raise
        except Exception as exc:  # the fallback failing too: the pipeline's apology
            raise ProviderError(self.local_name, f"fallback failed: {exc!r}") from exc
