"""WebSocket endpoints: ``/ws/v3`` (WebRTC signaling + events) and ``/ws/v3/audio`` (raw PCM).

Both build the same Session + VoicePipeline + SessionController (with ``resume``: resume.py);
only the media path differs. Every session gets a resume token in ``connection_established``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..core.conversation import ConversationManager
from ..core.status import ConnectionStatus, ErrorType
from ..transport import protocol
from ..transport.protocol import ErrorCode
from ..transport.webrtc import WebRTCSession
from ..services.base import STT_SAMPLE_RATE
from ..transport.pacing import RealTimePacer
from ..transport.ws_audio import AudioFormatError, WebSocketAudioTransport, parse_rate
from .auth import WEBSOCKET_CHECKS
from .capacity import busy_error, loading_error
from .controller import SessionController
from .outbox import Outbox
from .registry import AppRegistry, get_registry
from .resume import ResumingController, SessionResume, conversation_store
from .transcript_log import TranscriptLog
from .sessions import (CLOSE_IDLE, CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_AGAIN,
                       ServerBusyError, Session)

log = logging.getLogger(__name__)
# The origin and the token are checked by the router, before a route's code runs (auth.py).
router = APIRouter(dependencies=WEBSOCKET_CHECKS)

_PC_STATES = {
    "new": ConnectionStatus.CONNECTING, "connecting": ConnectionStatus.CONNECTING,
    "connected": ConnectionStatus.CONNECTED, "failed": ConnectionStatus.FAILED,
    "disconnected": ConnectionStatus.DISCONNECTED, "closed": ConnectionStatus.DISCONNECTED,
}


# What a refusal's log line says went wrong (``error_type``, for log search).
_REFUSAL_TYPES = {ErrorCode.INVALID_MESSAGE: ErrorType.VALIDATION,
                  ErrorCode.SERVER_BUSY: ErrorType.CAPACITY, ErrorCode.BUSY: ErrorType.CAPACITY}


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int,
                  body: dict[str, Any] | None = None) -> None:
    """One fatal error (``body``, or one made of ``code`` and ``message``), then the close."""
    log.warning("refusing %s: %s: %s", ws.url.path, code, message,
                extra={"error_type": _REFUSAL_TYPES.get(code, ErrorType.PROTOCOL)})
    await ws.send_json(body or protocol.error(code, message, fatal=True))
    await ws.close(code=close_code, reason=code)


async def _open_session(ws: WebSocket, transport: str, *, mode: dict[str, str],
                        refusal: str | None = None) -> tuple[AppRegistry, Session] | None:
    """Accept the socket and make a session, or refuse and close.

    The origin and the token were checked before (the router's dependencies, auth.py): an
    unauthenticated client got one fatal ``unauthorized`` error and the close (1008), nothing
    about the models or its other parameters, and never reaches here. ``refusal`` is a problem
    with the request found before (a bad ``?rate=``).
    """
    registry = get_registry(ws.app)
    await ws.accept()
    if refusal is not None:
        await _refuse(ws, ErrorCode.INVALID_MESSAGE, refusal, CLOSE_POLICY)
        return None
    # Admission: refused here, before anything of a session exists (no transcript, no peer
    # connection, no pipeline): a refusal costs one small message, whatever the load.
    if not registry.services_ready or registry.services is None:
        registry.prometheus.refused.labels(code=ErrorCode.SERVER_BUSY).inc()
        await _refuse(ws, ErrorCode.SERVER_BUSY, "models are still loading", CLOSE_TRY_AGAIN,
                      loading_error())
        return None
    try:
        session = registry.sessions.create(transport)
    except ServerBusyError as exc:
        registry.prometheus.refused.labels(code=ErrorCode.BUSY).inc()
        await _refuse(ws, ErrorCode.BUSY, str(exc), CLOSE_TRY_AGAIN,
                      busy_error(exc.capacity, exc.active))
        return None
    session.transcript = TranscriptLog(registry.config.server.transcripts_dir, session.id)
    session.transcript.start(transport=transport, **mode)
    return registry, session


def _make_pipeline(registry: AppRegistry, session: Session, sink: Any,
                   resume: SessionResume, vad: Any) -> Any:
    from ..pipeline.agent import VoicePipeline  # the heavy import only when a session starts

    async def emit(event: Any) -> None:
        if event.type == "metrics":
            registry.prometheus.observe_turn(event.metrics)
        elif event.type == "error":
            registry.prometheus.observe_error(event.code)
        await session.emit(event)
        resume.changed()  # a finished turn: its history saved for a later resume

    return VoicePipeline(registry.services, registry.config, emit=emit, sink=sink,
                         session_id=session.id, recovery=registry.recovery,
                         conversation=resume.conversation, vad=vad)


async def _start_pipeline(registry: AppRegistry, session: Session, sink: Any,
                          webrtc: WebRTCSession | None,
                          app: Any) -> tuple[Any, ResumingController] | None:
    """The session's pipeline and message controller; None (session closed) if it cannot start."""
    config = registry.config
    resume = SessionResume(
        conversation_store(app),
        ConversationManager(config.ai.system_prompt, max_messages=config.ai.history_messages),
        session.id)
    try:
        # The VAD's native session takes ~40 ms to build, longer beside busy models: off the
        # loop that carries every other session's audio (four sessions starting at once in a
        # bench run held the loop 209 ms, logged by core/loop_stall.py).
        assert registry.services is not None
        vad = await asyncio.to_thread(registry.services.vad.create)
        pipeline = _make_pipeline(registry, session, sink, resume, vad)
    except Exception as exc:
        log.exception("session %s: cannot start the pipeline", session.id,
                      extra={"error_type": ErrorType.INTERNAL})
        session.send_error(ErrorCode.INTERNAL, f"cannot start: {exc}", fatal=True)
        await registry.sessions.close(session.id, CLOSE_INTERNAL, "pipeline failed")
        return None
    session.pipeline = pipeline
    # The idle goodbye was said: the conversation ends as if the client had sent "end".
    pipeline.on_end = lambda reason: registry.sessions.request_close(session.id, CLOSE_NORMAL,
                                                                     reason)
    server = registry.config.server
    return pipeline, ResumingController(session, registry.sessions, pipeline, webrtc=webrtc,
                                        max_message_bytes=server.max_message_bytes,
                                        messages_per_second=server.messages_per_second,
                                        resume=resume)


async def _receive_loop(ws: WebSocket, session: Session, controller: SessionController,
                        outbox: Outbox, on_binary: Any) -> tuple[int, str]:
    """Read client frames until the client leaves or the session is closed."""
    while not session.closing:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return CLOSE_NORMAL, "client disconnected"
        if message.get("text") is not None:
            await controller.handle_raw(message["text"], via="signaling", reply=outbox.send)
        elif message.get("bytes") is not None:
            await on_binary(message["bytes"])
    return CLOSE_NORMAL, "session closed"


async def _run_session(ws: WebSocket, registry: AppRegistry, session: Session, outbox: Outbox,
                       controller: SessionController, on_binary: Any) -> None:
    code, reason = CLOSE_NORMAL, "client disconnected"
    try:
        code, reason = await _receive_loop(ws, session, controller, outbox, on_binary)
    except WebSocketDisconnect:
        pass
    except Exception as exc:
        log.exception("session %s: connection failed", session.id,
                      extra={"error_type": ErrorType.INTERNAL})
        session.send_error(ErrorCode.INTERNAL, f"session failed: {exc}", fatal=True)
        code, reason = CLOSE_INTERNAL, "internal error"
    finally:
        await registry.sessions.close(session.id, code, reason)
        if isinstance(controller, ResumingController):
            await controller.resume.finish()  # a reply cut by the close is saved too


@router.websocket("/ws/v3")
async def signaling_socket(ws: WebSocket) -> None:
    config = get_registry(ws.app).config
    opened = await _open_session(ws, "webrtc", mode={"mode": config.pipeline.mode,
                                                     "webrtc_mode": config.webrtc.mode})
    if opened is None:
        return
    registry, session = opened
    config = registry.config
    outbox = Outbox(ws, session.id, on_stalled=lambda: registry.sessions.request_close(
        session.id, CLOSE_IDLE, "the client stopped reading"))
    session.closer = outbox.close
    session.senders.append(outbox.send)
    controller: SessionController | None = None

    async def on_dc_message(raw: str | bytes) -> None:
        if controller is not None:
            await controller.handle_raw(raw, via="data_channel", reply=webrtc.send_data)

    media_lost = False  # the client is told once

    async def on_pc_state(state: str) -> None:
        nonlocal media_lost
        log.info("session %s: peer connection %s", session.id, state)
        session.set_connection_status(_PC_STATES.get(state, ConnectionStatus.CONNECTING))
        # "closed" reaches here only when the server did not close it: aioice gave up on the
        # peer (ICE consent expired: no answer to its checks for ~30 s). Media is gone for good
        # (no renegotiation), so the client must hear it, not wait on a silent session.
        if state in ("failed", "closed") and not media_lost:
            media_lost = True
            log.warning("session %s: media connection lost (peer connection %s)", session.id, state,
                        extra={"error_type": ErrorType.TRANSPORT})
            session.send_error("transport_failed",
                               f"the media connection was lost (peer connection {state}); "
                               "end the session and connect again")

    async def push_audio(pcm: Any) -> None:
        await pipeline.push_audio(pcm)

    webrtc = WebRTCSession(session.id, config, push_audio=push_audio, on_message=on_dc_message,
                           on_state=on_pc_state)
    session.transport = webrtc
    session.senders.append(webrtc.send_data)  # the data channel mirrors every server message
    started = await _start_pipeline(registry, session, webrtc.sink, webrtc=webrtc, app=ws.app)
    if started is None:
        return
    pipeline, controller = started
    established = protocol.connection_established(session.id, mode=config.webrtc.mode,
                                                  resume_token=controller.resume.token)
    session.reply(outbox.send, established)  # seq 1: the session's first message
    await pipeline.start()

    async def no_binary(data: bytes) -> None:
        if controller is not None and not controller.allow(outbox.send):  # floods too
            return
        session.send_error(ErrorCode.UNSUPPORTED,
                           "binary frames are not accepted here; audio goes over WebRTC "
                           "(or use /ws/v3/audio)", reply=outbox.send)

    await _run_session(ws, registry, session, outbox, controller, no_binary)


@router.websocket("/ws/v3/audio")
async def audio_socket(ws: WebSocket) -> None:
    rate, refusal = STT_SAMPLE_RATE, None
    try:
        rate = parse_rate(ws.query_params.get("rate"))
    except AudioFormatError as exc:
        refusal = str(exc)
    config = get_registry(ws.app).config
    opened = await _open_session(ws, "websocket_audio", refusal=refusal,
                                 mode={"mode": config.pipeline.mode})
    if opened is None:
        return
    registry, session = opened
    config = registry.config
    outbox = Outbox(ws, session.id, on_stalled=lambda: registry.sessions.request_close(
        session.id, CLOSE_IDLE, "the client stopped reading"))
    session.closer = outbox.close
    session.senders.append(outbox.send)

    async def push_audio(pcm: Any) -> None:
        await pipeline.push_audio(pcm)

    def on_paced() -> None:
        session.send_error(ErrorCode.RATE_LIMITED, "audio arrives faster than real time: it is "
                           "read at real time from now on (nothing is dropped)")

    server = config.server
    transport = WebSocketAudioTransport(
        session.id, rate, outbox.send, push_audio, on_paced=on_paced,
        pacer=RealTimePacer(server.audio_burst_s, speed=server.audio_speed))
    session.transport = transport
    started = await _start_pipeline(registry, session, transport.sink, webrtc=None, app=ws.app)
    if started is None:
        return
    pipeline, controller = started
    established = protocol.connection_established(session.id, transport="websocket_audio",
                                                  resume_token=controller.resume.token)
    established["audio"] = transport.audio_format()
    session.reply(outbox.send, established)
    transport.start()
    await pipeline.start()

    async def on_binary(data: bytes) -> None:
        if controller.ended:
            return
        try:
            await transport.handle_binary(data)
        except AudioFormatError as exc:
            session.send_error(exc.code, str(exc), reply=outbox.send)
        except Exception as exc:  # the pipeline failed on this frame: report, keep the session
            log.exception("session %s: audio frame failed", session.id,
                          extra={"error_type": ErrorType.INTERNAL})
            session.send_error(ErrorCode.INTERNAL, f"audio frame failed: {exc}", reply=outbox.send)

    await _run_session(ws, registry, session, outbox, controller, on_binary)
