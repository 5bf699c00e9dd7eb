"""Bounds below the app: how long a request's headers may take, how many sockets a client holds.

Why: uvicorn's ``timeout_keep_alive`` covers an idle connection after a response, but nothing
bounds a request whose headers never complete (the first byte of a request even stops the
keep-alive timer), nor connections per client: 200 half-sent requests stayed open, one file
descriptor each (#13). The app never sees such a connection, so the bounds are in the protocol.

- ``server.header_timeout_s``: the request line and headers must be in that long after the
  connection opens (keep-alive: after the first byte of the next request), else the server
  writes ``408 Request Timeout`` (connection: close) and closes. The timer stops once the
  headers are in: a slow body, a long response or an upgraded WebSocket is never cut.
- ``server.max_connections_per_client``: open TCP connections per peer IP, HTTP and WebSocket
  alike (after an upgrade the WebSocket protocol gives the slot back), loopback included. One
  over the cap is closed at once, unread and unanswered (cheapest in a flood): the client sees
  an empty reply or a reset. Counts are per server (:class:`ConnectionLimits`); behind a
  reverse proxy all clients share the proxy's address.

Warnings come at most every 10 s with a count, not one line per connection of a flood.

Why h11 only: ``http="auto"`` picks httptools when installed; it is no dependency here, so auto
is h11 already. Naming the class keeps the bounds when httptools does get installed instead of
silently serving unbounded; HTTP speed hardly matters here (audio goes over WebRTC/WebSocket).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..core.status import ErrorType

log = logging.getLogger(__name__)

_TIMEOUT_BODY = b"request headers not complete in time"
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                   b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                   % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))
WARN_EVERY_S = 10.0


class _ThrottledWarning:
    """A warning logged at most once per ``interval_s``, saying how many happened meanwhile."""

    def __init__(self, message: str, error_type: ErrorType) -> None:
        self._message, self._extra = message, {"error_type": error_type}
        self._last, self._count = -math.inf, 0

    def __call__(self, *args: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= WARN_EVERY_S:
            log.warning(self._message + " (%d since the last such warning)", *args, self._count,
                        extra=self._extra)
            self._last, self._count = now, 0


class ConnectionLimits:
    """One server's bounds and its count of open connections per client IP."""

    def __init__(self, max_per_client: int, header_timeout_s: float) -> None:
        self.max_per_client = max_per_client
        self.header_timeout_s = header_timeout_s
        self._open: dict[str, int] = {}
        self.warn_refused = _ThrottledWarning(
            "refused a connection from %s: over server.max_connections_per_client=%d",
            ErrorType.CAPACITY)
        self.warn_timed_out = _ThrottledWarning(
            "closed a connection from %s: headers incomplete after server.header_timeout_s=%g s",
            ErrorType.TIMEOUT)

    def acquire(self, ip: str) -> bool:
        """Take a slot for a new connection from ``ip``; False when it already has them all."""
        count = self._open.get(ip, 0)
        if count >= self.max_per_client:
            return False
        self._open[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        count = self._open.pop(ip, 0) - 1
        if count > 0:
            self._open[ip] = count


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the header timeout and the per-client cap."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot: str | None = None  # the client IP whose slot this connection holds
        self._header_timer: asyncio.TimerHandle | None = None
        self._upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:  # None on a Unix socket: nothing to count by
            ip = self.client[0]
            if not self.limits.acquire(ip):
                self.limits.warn_refused(ip, self.limits.max_per_client)
                transport.close()
                return
            self._slot = ip
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        try:
            super().connection_lost(exc)
        finally:
            if self._slot is not None:
                self.limits.release(self._slot)
                self._slot = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start on a pipelined request already received
        self._watch_headers()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._cancel_header_timer()
        self._upgraded = True
        super().handle_websocket_upgrade(event)
        slot, self._slot = self._slot, None
        if slot is None:
            return
        # The WebSocket protocol now gets this socket's connection_lost: it gives the slot back.
        ws = self.transport.get_protocol()
        lost = ws.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            try:
                lost(exc)
            finally:
                self.limits.release(slot)

        ws.connection_lost = connection_lost  # type: ignore[method-assign]

    def _watch_headers(self) -> None:
        """Timer on while part of a request's head is buffered, off once a request is in."""
        if (self._upgraded or self.transport.is_closing()
                or self.conn.their_state is not h11.IDLE):  # not IDLE: the headers are in
            self._cancel_header_timer()
        elif self.conn.trailing_data[0]:
            self._arm_header_timer()  # bytes of the next request, its headers not complete
        # else: idle between requests, which is timeout_keep_alive's business

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s,
                                                      self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._upgraded or self.transport.is_closing():
            return
        self.limits.warn_timed_out(self.client[0] if self.client else "?",
                                   self.limits.header_timeout_s)
        self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def limited_http_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, bound to one server's ``limits``."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"limits": limits})
