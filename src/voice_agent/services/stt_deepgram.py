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
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from voice_agent.core.config import ConfigError, V3Config
from voice_agent.core.errors import ProviderError, ProviderTimeoutError
from voice_agent.core.tasks import TaskSet
from voice_agent.services.fallback import FallbackSwitch
from voice_agent.services.base import STT_SAMPLE_RATE, STTService, Transcript
from voice_agent.services.stt_stream import (FinalCall, ResultSink, SpeechFailure, SpeechResult,
                                             STTStream)

log = logging.getLogger(__name__)

KEEPALIVE_S = 5.0
"""A KeepAlive goes out after this long without audio (Deepgram: within 10 s)."""
CLOSE_S = 0.5
"""How long closing a connection may wait for Deepgram's side of it."""
KEY_ENV = "VOICE_AGENT_STT__API_KEY"

KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})


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


def listen_url(base_url: str, params: dict[str, Any]) -> str:
    """``{base_url}/v1/listen?{params}``; http(s) roots become ws(s), as Deepgram's SDKs do."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    path = parts.path.rstrip("/") + "/v1/listen"
    return urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))


def to_linear16(audio: np.ndarray) -> bytes:
    """float32 [-1, 1] → little-endian int16 bytes."""
    pcm = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0
    return pcm.astype("<i2").tobytes()


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


class DeepgramStream(STTStream):
    """One utterance over one Deepgram connection; see the module's docstring."""

    def __init__(self, stt: DeepgramSTT, on_result: ResultSink, *,
                 final_call: FinalCall | None = None) -> None:
        super().__init__(on_result, stt.sample_rate)
        self._stt = stt
        self._final_call = final_call
        self.on_end_of_speech: Callable[[float], None] | None = None
        """With ``stt.provider_endpointing``: called with the end of speech (seconds from the
        stream's start) when Deepgram says the speech ended (``speech_final``,
        ``UtteranceEnd``). The pipeline may end the turn there (docs/providers.md)."""
        self._pcm = bytearray()  # everything fed: sent again if the connection is lost
        self._outbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self._segments: list[str] = []  # Deepgram's is_final transcripts, in order
        self._last_interim: tuple[str, float] | None = None
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved when Deepgram has answered the Finalize; failed when the connection is
        lost first."""
        self._failed: ProviderError | None = None
        self._ws: Any = None
        self._flushing = False  # a decisive interim's Finalize is waiting for its answer
        self._finalizes = 0  # Finalize messages sent ...
        self._finalized_answers = 0  # ... and Results with from_finalize received
        self._finalized = False
        self._closed = False
        self._tasks = TaskSet("deepgram stream")
        self._connection = self._tasks.spawn(self._run(), "connection")

    # -- the interface --------------------------------------------------------------------------

    def feed(self, audio: np.ndarray) -> None:
        if self._closed or self._finalized:
            return
        pcm = to_linear16(audio)
        self._samples += len(pcm) // 2
        self._pcm += pcm
        if self._failed is None:
            self._outbox.put_nowait(pcm)

    def request_interim(self, *, decisive: bool = False) -> None:
        """Deepgram sends its interims by itself. A *decisive* one (at a pause: its words may
        become the turn's) is asked for with ``Finalize``, which flushes what Deepgram holds and
        answers with finalized text covering all the audio sent; the stream goes on after it.
        One at a time."""
        if not decisive or self._flushing or self._finalized or self._closed \
                or self._failed is not None:
            return
        self._flushing = True
        self._finalizes += 1
        self._outbox.put_nowait(FINALIZE)
        # Deepgram may not answer a Finalize when it holds no audio: do not wait for ever.
        asyncio.get_running_loop().call_later(self._stt.timeout_s, self._unanswered)

    def _unanswered(self) -> None:
        if self._flushing:
            self._flushing = False
            self._finalizes -= 1  # the final waits for the answers that will come

    def finalize(self, speech_end_s: float) -> None:
        if self._closed or self._finalized:
            return
        self._finalized = True
        self._tasks.spawn(self._final(), "final")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        if ws is not None:
            try:  # CloseStream ends Deepgram's side (and its billing) cleanly, then our close
                async with asyncio.timeout(CLOSE_S):
                    await ws.send(CLOSE_STREAM)
                    await ws.close()
            except Exception:  # closed already, or too slow: abandoned below
                ws.transport.abort()
        await self._tasks.stop()

    # -- the connection ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            ws = await self._stt.connect()
        except ProviderError as exc:
            self._lose(exc)
            return
        if self._closed:
            await _close(ws)
            return
        self._ws = ws
        sender = self._tasks.spawn(self._send(ws), "send")
        try:
            async for message in ws:
                self._on_message(_json(message))
        except _closed_errors() as exc:
            self._lose(_lost(self._stt.name, exc))
        else:  # a normal close: every answer is in, unless it came before the end of speech
            if not self._finalized and not self._closed:
                self._lose(ProviderError(self._stt.name, "Deepgram closed the stream early"))
            self._resolve()
        finally:
            sender.cancel()

    async def _send(self, ws: Any) -> None:
        keepalive_s = self._stt.keepalive_s
        try:
            while True:
                try:
                    async with asyncio.timeout(keepalive_s):
                        item = await self._outbox.get()
                except TimeoutError:
                    await ws.send(KEEPALIVE)
                    continue
                if item is None:
                    return
                await ws.send(item)
        except _closed_errors():
            return  # the receiving side reports it

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "Results":
            text = _transcript(msg)
            end_s = _float(msg.get("start")) + _float(msg.get("duration"))
            if msg.get("is_final"):
                if text:
                    self._segments.append(text)
                words = " ".join(self._segments)
            else:
                words = " ".join([*self._segments, text] if text else self._segments)
            flushed = bool(msg.get("from_finalize"))
            if flushed:
                self._finalized_answers += 1
            # A decisive interim is pushed even without words: "nothing was said" is an answer.
            answer = flushed and self._flushing
            if not self._finalized and (answer or (
                    words and (words, end_s) != self._last_interim)):
                self._last_interim = (words, end_s)
                self._push(SpeechResult(words, False, 0.0, end_s,
                                        decisive=bool(msg.get("is_final"))))
            if answer:
                self._flushing = False
            if msg.get("speech_final") and text:
                self._end_of_speech(end_s)
            if flushed and self._finalized and self._finalized_answers >= self._finalizes:
                self._resolve()  # the answer to the last Finalize, the end of speech's
        elif kind == "UtteranceEnd":
            self._end_of_speech(_float(msg.get("last_word_end")))
        elif kind == "Metadata":
            self._resolve()
        elif kind == "Error":
            self._lose(_error_message(self._stt.name, msg))

    def _end_of_speech(self, end_s: float) -> None:
        if self._stt.endpointing and self.on_end_of_speech is not None and not (
                self._finalized or self._closed):
            self.on_end_of_speech(end_s)

    def _resolve(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _lose(self, error: ProviderError) -> None:
        """The connection is gone: the final's first try fails with ``error``; interims stop
        (reported once, as an interim failure, before the end of the utterance)."""
        if self._failed is not None or self._done.done():
            return
        self._failed = error
        self._done.set_exception(error)
        self._done.exception()  # retrieved: nobody may be waiting yet
        if not self._finalized:
            self._push(SpeechFailure(error, final=False))

    # -- the final --------------------------------------------------------------------------

    async def _final(self) -> None:
        tries = 0

        async def final() -> SpeechResult:
            nonlocal tries
            tries += 1
            if tries == 1:
                text = await self._live_final()
            else:  # the live connection failed: the utterance again, over a fresh one
                text = await self._stt.transcribe_pcm(bytes(self._pcm))
            return SpeechResult(text, True, 0.0, self.duration_s, decisive=True)

        fallback = self._stt.fallback
        try:
            try:
                result = await (self._final_call(final) if self._final_call is not None
                                else final())
            except ProviderError as exc:
                if fallback is None:
                    raise
                fallback.enter(exc)
                audio = np.frombuffer(bytes(self._pcm), "<i2").astype(np.float32) / 32767.0
                text = (await fallback.transcribe(audio, final=True)).text
                result = SpeechResult(text, True, 0.0, self.duration_s, decisive=True)
            else:
                if fallback is not None:
                    fallback.leave()
        except ProviderError as exc:
            self._push(SpeechFailure(exc, final=True))
        else:
            self._push(result)
        finally:
            self._outbox.put_nowait(None)
            if self._ws is not None:
                await _close(self._ws)

    async def _live_final(self) -> str:
        if self._failed is None:
            self._finalizes += 1
            self._outbox.put_nowait(FINALIZE)
            self._outbox.put_nowait(CLOSE_STREAM)
        try:
            async with asyncio.timeout(self._stt.timeout_s):
                await asyncio.shield(self._done)
        except TimeoutError:
            raise ProviderTimeoutError(self._stt.name, "no final transcript within "
                                       f"{self._stt.timeout_s:g}s") from None
        return " ".join(self._segments)

    def _push(self, result: SpeechResult | SpeechFailure) -> None:
        if not self._closed:
            self.on_result(result)


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


def _closed_errors() -> tuple[type[BaseException], ...]:
    from websockets.exceptions import ConnectionClosedError
    return (ConnectionClosedError,)


def _lost(provider: str, exc: BaseException) -> ProviderError:
    rcvd = getattr(exc, "rcvd", None)
    why = f" (close {rcvd.code} {rcvd.reason})".rstrip() if rcvd is not None else ""
    return ProviderError(provider, f"connection to Deepgram lost{why}")


def _error_message(provider: str, msg: dict[str, Any]) -> ProviderError:
    detail = str(msg.get("description") or msg.get("message") or msg.get("err_msg") or "")[:200]
    return ProviderError(provider, f"Deepgram error: {detail or 'unknown'}")


async def _close(ws: Any) -> None:
    try:
        async with asyncio.timeout(CLOSE_S * 2):
            await ws.close()
    except Exception:  # closing: nothing is left to save
        pass


def _json(message: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(message)
    except (ValueError, TypeError):
        log.debug("skipping a message that is not JSON: %.80r", message)
        return {}
    return msg if isinstance(msg, dict) else {}


def _transcript(msg: dict[str, Any]) -> str:
    try:
        text = msg["channel"]["alternatives"][0]["transcript"]
    except (KeyError, IndexError, TypeError):
        return ""
    return text.strip() if isinstance(text, str) else ""


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
