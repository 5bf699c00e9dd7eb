"""Admission across workers: a session's slot is taken in Redis before its socket is answered.

Why a middleware and a context variable: ``SessionManager.create`` is synchronous (the routes
in signaling.py call it between accepting the socket and making the session, with no await in
between), and a Redis call is not. So the one asynchronous step happens before the route runs:
:class:`ClusterAdmission` wraps the two session sockets (``/ws/v3``, ``/ws/v3/audio``), asks the
shared registry for a slot (one atomic Lua script: see cluster.py), and leaves the answer in
:data:`_admission` for ``create`` to read in the same task. ``create`` then takes the slot
(the session gets the id it was reserved under) or refuses with ``busy`` exactly as for a
full worker: the refusal is still the client's first and only message, after the origin and
token checks and the models-loading check, which run in the route before ``create``.

A slot reserved for a socket that never became a session (a refused token, models loading,
a bad ``?rate=``) is handed back when the socket's request ends. No answer from Redis (down,
slow, not yet reached) leaves no admission in the context: ``create`` then admits by this
worker's own ``max_sessions`` alone, as without Redis.

Nothing here imports redis-py (app.py and routes_http.py import this module with or without a
Redis; cluster.py, which needs it, only when ``server.redis_url`` is set).
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from .registry import AppRegistry

log = logging.getLogger(__name__)

SESSION_PATHS = frozenset({"/ws/v3", "/ws/v3/audio"})
"""The sockets that make a session (signaling.py's routes)."""


@dataclass
class Admission:
    """The shared registry's answer for one socket."""

    session_id: str
    """The id the slot is reserved under; the session takes it."""
    admitted: bool
    capacity: int
    """``server.max_sessions``: sessions open at once across every worker."""
    active: int
    """Sessions across every worker when asked (the new one included when admitted)."""
    taken: bool = False
    """Set by ``SessionManager.create``: a session holds the slot now (it frees it on close)."""


_admission: contextvars.ContextVar[Admission | None] = contextvars.ContextVar(
    "voice_agent_cluster_admission", default=None)


def current_admission() -> Admission | None:
    """The admission of the socket being handled in this task, if the registry gave one."""
    return _admission.get()


class ClusterAdmission:
    """Pure ASGI middleware (no task of its own: the route runs in the task that set the
    context variable, so ``create`` sees it)."""

    def __init__(self, app: Any, registry: AppRegistry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        registry = self.registry
        cluster = registry.cluster
        if (scope["type"] != "websocket" or scope.get("path") not in SESSION_PATHS
                or cluster is None
                # Refused anyway, without a slot: models loading, or this worker full.
                or not registry.services_ready
                or len(registry.sessions) >= registry.sessions.max_sessions):
            await self.app(scope, receive, send)
            return
        admission = await cluster.reserve()
        token = _admission.set(admission)
        try:
            await self.app(scope, receive, send)
        finally:
            _admission.reset(token)
            if admission is not None and admission.admitted and not admission.taken:
                cluster.release(admission.session_id)


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, for /v3/config and the logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def url_password(url: str | None) -> str | None:
    password = urlsplit(url).password if url else None
    return unquote(password) if password else None
