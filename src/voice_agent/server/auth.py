"""Who gets in: FastAPI dependencies for the token and for WebSocket origins.

Routes do not check by hand: a router carries the checks (``dependencies=[...]``), so a route
added under it cannot forget them. :func:`protected_router` makes the HTTP one;
:data:`WEBSOCKET_CHECKS` goes on the WebSocket router, origin first, then the token.

The refusals are those of docs/protocol.md: HTTP gets 401 with ``WWW-Authenticate: Bearer``. A
WebSocket is accepted first (a refused handshake would give the client an HTTP 403 and no
reason), then gets one fatal ``unauthorized`` error and close 1008, or, for an origin not
allowed, close 1008 (``origin_not_allowed``) without a message. Raising
:class:`WebSocketException` after the accept makes Starlette close with that code and reason,
and the route's own code never runs: no session is made.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, WebSocket, WebSocketException
from fastapi.requests import HTTPConnection

from ..core.status import ErrorType
from ..transport import protocol
from ..transport.protocol import ErrorCode
from .registry import get_registry
from .security import origin_allowed
from .sessions import CLOSE_POLICY

# The refusals are logged under the signaling logger, as they were before the checks moved.
log = logging.getLogger("voice_agent.server.signaling")

WRONG_TOKEN = "missing or wrong token"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"


async def require_token(conn: HTTPConnection) -> None:
    """The configured ``auth_token``, as a bearer header or ``?token=`` (see
    :meth:`AppRegistry.authorized`); passes everyone when none is configured."""
    if get_registry(conn.app).authorized(conn.headers, conn.query_params):
        return
    if not isinstance(conn, WebSocket):
        raise HTTPException(status_code=401, detail=WRONG_TOKEN,
                            headers={"WWW-Authenticate": "Bearer"})
    await conn.accept()
    log.warning("refusing %s: %s: %s", conn.url.path, ErrorCode.UNAUTHORIZED, WRONG_TOKEN,
                extra={"error_type": ErrorType.AUTH})
    await conn.send_json(protocol.error(ErrorCode.UNAUTHORIZED, WRONG_TOKEN, fatal=True))
    raise WebSocketException(code=CLOSE_POLICY, reason=ErrorCode.UNAUTHORIZED)


async def require_allowed_origin(ws: WebSocket) -> None:
    """Refuse WebSockets opened by pages of other sites (see :func:`origin_allowed`)."""
    origin = ws.headers.get("origin")
    if origin_allowed(origin, ws.headers.get("host"),
                      get_registry(ws.app).config.server.cors_origins):
        return
    await ws.accept()
    log.warning("refusing %s: origin %.80r not allowed", ws.url.path, origin,
                extra={"error_type": ErrorType.AUTH})
    raise WebSocketException(code=CLOSE_POLICY, reason=ORIGIN_NOT_ALLOWED)


WEBSOCKET_CHECKS: list[Any] = [Depends(require_allowed_origin), Depends(require_token)]
"""The WebSocket router's dependencies, in the order they run: a foreign page learns nothing,
not even that a token is needed."""


def protected_router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose every route needs the token."""
    dependencies = [Depends(require_token), *kwargs.pop("dependencies", [])]
    return APIRouter(dependencies=dependencies, **kwargs)
