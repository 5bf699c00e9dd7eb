"""The worker's one Redis connection (``server.redis_url``), shared by everything that uses Redis:
the registry of several workers (cluster.py, its transcript mirror) and the resumable
conversations (resume_store.py).

- One redis-py asyncio client, hence one connection pool, made by app.py and closed once at
  shutdown, after both of its users are done with it.
- Every call bounded: short socket timeouts, one retry at once (a pooled connection may be
  stale after Redis restarted) and an overall deadline (:data:`CALL_TIMEOUT_S`, or the caller's).
- One outage state: the first call that fails marks Redis down, logged once (not per call, nor
  per user); the first call made since then that reaches it marks it back, logged once too.
  /v3/health reads :attr:`RedisLink.up` (``degraded`` while it is not); whoever must act on
  either edge registers with :meth:`RedisLink.watch` (cluster.py: the heartbeat registers the
  worker's sessions again, the transcript mirror copies from disk what Redis missed).

Nothing here names a key: each user keeps its own prefix (``va:`` for the cluster,
``voice-agent:resume:`` for the conversations).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..core.tasks import within

log = logging.getLogger(__name__)
T = TypeVar("T")

CALL_TIMEOUT_S = 1.0
"""Longest any one Redis call may take unless its caller says otherwise (socket timeouts
inside it are shorter)."""
SOCKET_TIMEOUT_S = 0.8
CONNECT_TIMEOUT_S = 0.5


class RedisUnavailable(Exception):
    """A Redis call failed or took too long (already logged as the outage)."""


class RedisLink:
    """The client, its bounded calls and the outage state (``app.state.registry.redis``)."""

    def __init__(self, url: str) -> None:
        self.url = url  # may hold a password: never logged
        # One retry at once: the pool's connection may be stale after Redis restarted.
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1), decode_responses=True, health_check_interval=0)
        self.state = "starting"
        """``ok``, ``down`` (an outage) or ``starting`` (no call answered or failed yet)."""
        self.down_since: float | None = None
        self._watchers: list[Callable[[bool], None]] = []

    @property
    def up(self) -> bool:
        return self.state == "ok"

    def watch(self, callback: Callable[[bool], None]) -> None:
        """``callback(False)`` when an outage starts, ``callback(True)`` when it ends."""
        self._watchers.append(callback)

    async def call(self, awaitable: Awaitable[T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        """One bounded Redis call; :class:`RedisUnavailable` when it fails or is too slow."""
        started = time.monotonic()
        try:
            result = await within(awaitable, timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._lost(exc)
            raise RedisUnavailable(repr(exc)) from exc
        # A call sent before the outage began proves nothing about Redis now.
        if self.state != "ok" and started >= (self.down_since or 0.0):
            self._reached()
        return result

    def _lost(self, exc: BaseException) -> None:
        if self.state == "down":
            return
        log.warning("Redis is unreachable (%r): until it is back, this worker serves its own "
                    "sessions alone (admission by its max_sessions) and conversations cannot "
                    "be saved or resumed", exc)
        self.state, self.down_since = "down", time.monotonic()
        self._tell(False)

    def _reached(self) -> None:
        was_down = self.state == "down"
        if was_down:
            log.warning("Redis is back after %.1f s",
                        time.monotonic() - (self.down_since or time.monotonic()))
        self.state, self.down_since = "ok", None
        if was_down:
            self._tell(True)

    def _tell(self, up: bool) -> None:
        for callback in self._watchers:
            try:
                callback(up)
            except Exception:  # one user's bug must not hide the outage from the others
                log.exception("redis link: a watcher failed")

    async def aclose(self) -> None:
        """Close the connections (once, at shutdown; a later call would open new ones)."""
        try:
            await within(self.redis.aclose(), CALL_TIMEOUT_S)
        except Exception as exc:  # closing must not fail a shutdown
            log.debug("closing the Redis client: %r", exc)
