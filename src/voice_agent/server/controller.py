"""Client messages, whatever they came over (signaling socket, data channel, audio socket).

One place validates and dispatches them, so every transport behaves the same.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..transport import protocol
from ..transport.protocol import (EndMessage, ErrorCode, IceCandidateMessage, InterruptMessage,
                                  OfferMessage, PingMessage, ProtocolError, TextMessage)
from ..transport.webrtc import TransportError, WebRTCSession
from .sessions import CLOSE_NORMAL, Sender, Session, SessionManager

if TYPE_CHECKING:
    from ..pipeline.agent import VoicePipeline

log = logging.getLogger(__name__)

RATE_NOTICE_INTERVAL_S = 1.0


class RateLimiter:
    """Token bucket: ``rate`` messages per second, bursts of up to ``2 * rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, 2 * rate)
        self._tokens = self.capacity
        self._at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class SessionController:
    def __init__(self, session: Session, manager: SessionManager, pipeline: VoicePipeline, *,
                 webrtc: WebRTCSession | None, max_message_bytes: int,
                 messages_per_second: float) -> None:
        self.session = session
        self.manager = manager
        self.pipeline = pipeline
        self.webrtc = webrtc
        self.max_message_bytes = max_message_bytes
        self._limiter = RateLimiter(messages_per_second)
        self._limited_notice_at = -RATE_NOTICE_INTERVAL_S
        self.dropped = 0
        """Messages dropped by the rate limit so far."""
        self.ended = False
        """The client sent ``end``: whatever it sends after that is ignored."""

    def allow(self, reply: Sender) -> bool:
        """Take one message from the rate limit; over it, the message is dropped and the client
        told so, at most once per second (answering every message of a flood would be a flood
        of our own). After ``end`` nothing is allowed, silently."""
        if self.ended:
            return False
        if self._limiter.allow():
            return True
        self.dropped += 1
        now = time.monotonic()
        if now - self._limited_notice_at >= RATE_NOTICE_INTERVAL_S:
            self._limited_notice_at = now
            self.session.send_error(
                ErrorCode.RATE_LIMITED,
                f"too many messages (over {self._limiter.rate:g}/s); dropping them "
                f"({self.dropped} so far)", reply=reply)
        return False

    async def handle_raw(self, raw: str | bytes, *, via: str, reply: Sender) -> None:
        """Validate and handle one message; errors go back to ``reply`` and the session goes on."""
        session = self.session
        if not self.allow(reply):
            return
        try:
            message = protocol.parse_client_message(raw, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            session.send_error(exc.code, exc.message, reply=reply)
            return
        try:
            await self._dispatch(message, via=via, reply=reply)
        except (TransportError, ProtocolError) as exc:
            session.send_error(exc.code, exc.message, reply=reply)
        except Exception as exc:  # a bug must not end the session
            log.exception("session %s: handling %s failed", session.id, message.type)
            session.send_error(ErrorCode.INTERNAL, f"could not handle '{message.type}': {exc}",
                               reply=reply)

    async def _dispatch(self, message: Any, *, via: str, reply: Sender) -> None:
        session = self.session
        if isinstance(message, OfferMessage):
            webrtc = self._signaling_only(via, "offer")
            sdp = await webrtc.handle_offer(message.sdp)
            session.reply(reply, protocol.answer(sdp))
        elif isinstance(message, IceCandidateMessage):
            webrtc = self._signaling_only(via, "ice-candidate")
            await webrtc.add_candidate(message.candidate)
        elif isinstance(message, TextMessage):
            await self.pipeline.push_text(message.text)
        elif isinstance(message, InterruptMessage):
            await self.pipeline.interrupt()
        elif isinstance(message, PingMessage):
            session.reply(reply, protocol.pong(message.timestamp, time.time()))
        elif isinstance(message, EndMessage):
            self.ended = True
            self.manager.request_close(session.id, CLOSE_NORMAL, "client ended the session")
        else:  # a type a subclass handles (resume.py) must never fall through to "end"
            raise ProtocolError(ErrorCode.UNSUPPORTED,
                                f"'{message.type}' is not handled on this connection")

    def _signaling_only(self, via: str, kind: str) -> WebRTCSession:
        if self.webrtc is None or via != "signaling":
            raise ProtocolError(ErrorCode.UNSUPPORTED,
                                f"'{kind}' is only accepted on the /ws/v3 signaling socket")
        return self.webrtc
