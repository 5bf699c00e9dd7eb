"""Which ``Host`` the server answers to: a guard against DNS rebinding.

A web page on ``attacker.example`` can have its name re-pointed at 127.0.0.1 (DNS rebinding):
the browser then sends that page's requests to this server, as same-origin requests with
``Host: attacker.example:PORT``, so neither CORS nor the WebSocket origin check stops it. Local
AI servers have shipped this bug before (Ollama fixed it by checking Host). The fix is to answer
only to the names this server is reached by: ``localhost``, ``127.0.0.1``, ``[::1]``, the bind
address, and ``server.allowed_hosts``. Everything else, HTTP and WebSockets alike and with or
without a token, gets ``403`` before any route runs (a WebSocket's handshake is refused with
that HTTP response: the socket never opens).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.status import ErrorType

log = logging.getLogger(__name__)

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
"""Bind addresses that are no name a client uses: they add nothing to the allowed hosts."""
LOG_EVERY_S = 10.0
"""Refusals are logged once per this many seconds (and counted): a rebinding page may retry
in a loop, and one log line per request would be a flood of our own."""
HOST_NOT_ALLOWED = "host_not_allowed"


def host_name(header: str | None) -> str | None:
    """The lower-case host name of a ``Host`` header without its port; ``[::1]:8000`` gives
    ``::1``; None when it is missing or not a host."""
    if not header:
        return None
    value = header.strip().lower()
    if value.startswith("["):  # an IPv6 literal, maybe with a port
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        name = value[1:end]
    else:
        name, _, port = value.partition(":")
        if port and not port.isdigit():
            return None
    name = name.rstrip(".")  # "localhost." is the same name, fully qualified
    return name or None


def allowed_hosts(bind_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The names the server answers to (see the module docstring); ``*`` allows any."""
    names = {*DEFAULT_HOSTS, *(h.strip().lower().strip("[]").rstrip(".") for h in extra)}
    bind = bind_host.strip().lower().strip("[]")
    if bind not in WILDCARD_BINDS:
        names.add(bind)
    return frozenset(n for n in names if n)


class HostCheck:
    """ASGI middleware refusing requests whose ``Host`` is not an allowed name."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(hosts)
        self.allow_any = "*" in self.hosts
        self.refused = 0
        """Requests refused so far (for tests and the logs)."""
        self._logged_at = -LOG_EVERY_S

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        if host_name(header) in self.hosts:
            await self.app(scope, receive, send)
            return
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("refusing %s %s: Host %.80r is not an allowed host (%d refused so far; "
                        "add it to server.allowed_hosts if it is this server's name)",
                        scope["type"], scope.get("path", ""), header, self.refused,
                        extra={"error_type": ErrorType.AUTH})
        await _forbidden(scope, send)


async def _forbidden(scope: Scope, send: Send) -> None:
    """403 with the same error body as the rest of the API; a WebSocket's handshake gets it as
    its HTTP response (the ASGI denial response, which uvicorn supports), else a close."""
    body = json.dumps({"detail": "host not allowed", "code": HOST_NOT_ALLOWED}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": HOST_NOT_ALLOWED})
            return
        prefix = "websocket."
    else:
        prefix = ""
    await send({"type": f"{prefix}http.response.start", "status": 403, "headers": headers})
    await send({"type": f"{prefix}http.response.body", "body": body})
