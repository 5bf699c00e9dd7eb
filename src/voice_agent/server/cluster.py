"""Several workers, one registry: every session's ``SessionInfo`` in Redis (``server.redis_url``).

What is in Redis (one instance; the keys are built inside the scripts, so not Redis Cluster):

- ``va:cluster:workers``: a sorted set, worker id -> its last heartbeat (ms, Redis's own clock,
  so the workers' clocks never matter).
- ``va:cluster:sessions:<worker>``: a hash, session id -> the session's ``SessionInfo``
  (``as_dict``) with its transport stats as last pushed, under a TTL of
  ``server.registry_ttl_s`` renewed by each heartbeat: the worker's sessions live exactly as long
  as it does. A worker killed with SIGKILL stops renewing; every script first forgets workers
  whose heartbeat is older than the TTL (and their hashes), and the hash expires by itself if
  no worker is left to do it. Heartbeats come every third of the TTL: with the default 6 s a
  killed worker's sessions leave every listing 6 s after its last heartbeat (so within 6 s of
  the kill) and their keys within the next heartbeat of another worker (8 s at worst), within
  the 10 s the issue asks.
- ``va:cluster:info:<worker>``: the worker's own figures (capacity, open sessions), same TTL.
- ``va:cluster:claim:<worker>``: which process holds the worker id (a token of its own, same
  TTL): a second live process started with the same ``server.worker_id`` would replace the
  first one's sessions in the registry with its own at every heartbeat; it is refused at
  start-up instead, after waiting out a crashed predecessor's claim.
- ``va:transcript:<session>``: the transcript mirror (cluster_transcripts.py).

One heartbeat task per worker replaces the worker's hash with its sessions as they are (one
script: whatever Redis lost, a restart included, is registered again by the next heartbeat,
and a session whose removal failed is dropped by it). Admission is one script too (see
:data:`ADMIT`): it counts the live sessions of every worker and adds the new one only under
``server.max_sessions``, atomically, so two workers cannot both take the last slot. This
worker's writes go one at a time (one lock), so a heartbeat's snapshot can never overwrite a
slot reserved after it was taken.

Redis down or slow: every call goes through the worker's one client (redis_link.py: bounded,
and one outage state shared with the resume store, logged once), and while the outage lasts
nothing here waits on Redis: admission falls back to this worker's own ``max_sessions``, listings
show this worker's sessions, /v3/health says ``degraded``, and only the heartbeat keeps trying.
Whichever call reaches Redis again (the heartbeat's, or a resume store's) ends the outage, and
the heartbeat then runs at once and re-registers every session.
Nothing here runs on a session's audio path. What an outage costs: while it lasts each worker
admits up to its own ``max_sessions``, and once Redis is back (empty, if it restarted) a worker
that has not yet heartbeaten is missing from the others' counts for up to one heartbeat (2 s);
its own admissions count its sessions from memory, never from what Redis kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.tasks import TaskSet, within
from .cluster_admission import Admission, redact_url
from .cluster_transcripts import TranscriptMirror, transcript_key
from .redis_link import RedisLink, RedisUnavailable

if TYPE_CHECKING:
    from .sessions import Session, SessionManager

log = logging.getLogger(__name__)

# Unchanged key names: during a rolling upgrade every worker must keep finding the others' keys.
PREFIX = "va:cluster:"
WORKERS_KEY = PREFIX + "workers"
STATS_TIMEOUT_S = 0.5
"""A session's transport stats for the heartbeat; a slow one is pushed without them."""

# Every script starts here: the caller's arguments, Redis's clock, and dead workers forgotten.
_PURGE = """
local prefix, worker, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))) do
  redis.call('DEL', prefix .. 'sessions:' .. w, prefix .. 'info:' .. w)
  redis.call('ZREM', KEYS[1], w)
end
local own = prefix .. 'sessions:' .. worker
"""

ADMIT = _PURGE + """
-- ARGV[4] session id, ARGV[5] its placeholder, ARGV[6] max sessions, ARGV[7] this worker's
-- own count (its sessions and reservations: right even when Redis lost its hash)
local n = 0
for _, w in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if w ~= worker then n = n + redis.call('HLEN', prefix .. 'sessions:' .. w) end
end
n = n + math.max(redis.call('HLEN', own), tonumber(ARGV[7]))
if n >= tonumber(ARGV[6]) then return {0, n} end
redis.call('HSET', own, ARGV[4], ARGV[5])
redis.call('PEXPIRE', own, ttl)
redis.call('ZADD', KEYS[1], now, worker)
return {1, n + 1}
"""

SYNC = _PURGE + """
-- ARGV[4] this process's claim on the worker id, ARGV[5] the worker's info, then session id /
-- SessionInfo pairs: the whole hash, replaced. Another process's live claim: nothing written.
local claim = prefix .. 'claim:' .. worker
local holder = redis.call('GET', claim)
if holder and holder ~= ARGV[4] then return {-1, redis.call('PTTL', claim)} end
redis.call('SET', claim, ARGV[4], 'PX', ttl)
redis.call('DEL', own)
for i = 6, #ARGV, 2 do redis.call('HSET', own, ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', own, ttl)
redis.call('SET', prefix .. 'info:' .. worker, ARGV[5], 'PX', ttl)
redis.call('ZADD', KEYS[1], now, worker)
local n, workers = 0, redis.call('ZRANGE', KEYS[1], 0, -1)
for _, w in ipairs(workers) do n = n + redis.call('HLEN', prefix .. 'sessions:' .. w) end
return {n, #workers}
"""

LIST = _PURGE + """
local out = {}
for _, w in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = {w, redis.call('GET', prefix .. 'info:' .. w) or '',
                   redis.call('HGETALL', prefix .. 'sessions:' .. w)}
end
return out
"""


class ClusterRegistry:
    """This worker's side of the shared registry (``app.state.registry.cluster``)."""

    def __init__(self, link: RedisLink, *, worker: str, max_sessions: int, ttl_s: float,
                 transcripts_dir: Path) -> None:
        self.link = link
        self.url = link.url
        self.worker = worker
        self.max_sessions = max_sessions
        self.ttl_ms = int(ttl_s * 1000)
        self.interval_s = ttl_s / 3
        self.redis = link.redis
        self._admit = self.redis.register_script(ADMIT)
        self._sync = self.redis.register_script(SYNC)
        self._list = self.redis.register_script(LIST)
        self._registered = False
        """Synced since the start or the last outage (its first sync is logged)."""
        self.claim = uuid.uuid4().hex
        """This process's claim on the worker id in Redis."""
        self.claimed_elsewhere = False
        """The last heartbeat found another live process holding this worker id."""
        self.cluster_sessions: int | None = None
        self.cluster_workers: int | None = None
        """As of the last heartbeat (/v3/health reads these, never Redis)."""
        self.sessions: SessionManager | None = None
        self.mirror = TranscriptMirror(self, transcripts_dir)
        self._reserved: dict[str, str] = {}
        """Slots reserved in Redis, not yet a session: session id -> placeholder."""
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks = TaskSet(f"cluster {worker}")
        self._heartbeat: asyncio.Task[None] | None = None
        link.watch(self._redis_changed)

    @property
    def state(self) -> str:
        """The worker's Redis link's: ``ok``, ``down`` (an outage: nothing here but the
        heartbeat calls Redis) or ``starting``."""
        return self.link.state

    @property
    def down_since(self) -> float | None:
        return self.link.down_since

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, sessions: SessionManager) -> None:
        """Register (once, awaited: admission knows Redis's state from the first session on)
        and start the heartbeat. Redis down at start is an outage like any other."""
        self.sessions = sessions
        sessions.cluster = self
        await self.heartbeat()
        # A crashed process's claim lapses within the TTL; a live one is renewed every third.
        deadline = time.monotonic() + self.ttl_ms / 1000 * 1.5
        while self.claimed_elsewhere:
            if time.monotonic() > deadline:
                raise WorkerIdInUse(
                    f"server.worker_id {self.worker!r} is held by another live worker in Redis "
                    f"{redact_url(self.url)}: give every worker its own worker_id")
            await asyncio.sleep(self.interval_s / 2)
            await self.heartbeat()
        self._heartbeat = self._tasks.spawn(self._heartbeat_forever(), "heartbeat")
        self.mirror.start()

    async def stop(self) -> None:
        """Leave the registry (the sessions are closed by now); app.py closes the link."""
        await self.mirror.stop()
        await self._tasks.stop()
        if self.state == "ok" and not self.claimed_elsewhere:
            with contextlib.suppress(RedisUnavailable):
                async with self._lock:
                    await self.link.call(self.redis.delete(f"{PREFIX}sessions:{self.worker}",
                                                           f"{PREFIX}info:{self.worker}",
                                                           f"{PREFIX}claim:{self.worker}"))
                    await self.link.call(self.redis.zrem(WORKERS_KEY, self.worker))

    # -- admission ----------------------------------------------------------------------------
    async def reserve(self) -> Admission | None:
        """A slot for one more session across every worker, or None: decide locally (Redis
        down, or its answer too slow)."""
        sid = uuid.uuid4().hex
        placeholder = json.dumps({"session_id": sid, "worker": self.worker, "reserved": True,
                                  "started_at": time.time()})
        async with self._lock:
            if self.state != "ok":
                return None
            own = len(self.sessions or ()) + len(self._reserved)
            try:
                admitted, active = await self.link.call(self._admit(
                    keys=[WORKERS_KEY], args=[PREFIX, self.worker, self.ttl_ms, sid,
                                              placeholder, self.max_sessions, own]))
            except RedisUnavailable:
                return None
            if admitted:
                self._reserved[sid] = placeholder
        return Admission(sid, bool(admitted), self.max_sessions, int(active))

    def release(self, session_id: str) -> None:
        """A reserved slot no session took."""
        self.session_closed(session_id)

    # -- what SessionManager tells -------------------------------------------------------------
    def session_opened(self, session: Session) -> None:
        """Listed at once on every worker (not only at the next heartbeat)."""
        self._reserved.pop(session.id, None)
        self._spawn_write(self._upsert(session), "register")

    def session_closed(self, session_id: str) -> None:
        self._reserved.pop(session_id, None)
        self._spawn_write(self._remove(session_id), "unregister")

    def _spawn_write(self, coro: Awaitable[None], name: str) -> None:
        if self.state != "ok":  # the heartbeat woken when the outage ends writes it all
            coro.close()  # type: ignore[attr-defined]
            return
        self._tasks.spawn(coro, name)  # type: ignore[arg-type]

    async def _upsert(self, session: Session) -> None:
        async with self._lock:
            if self.sessions is None or self.sessions.get(session.id) is None:
                return  # closed meanwhile
            own = f"{PREFIX}sessions:{self.worker}"
            with contextlib.suppress(RedisUnavailable):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(own, session.id, self._entry(session, {}))
                    pipe.pexpire(own, self.ttl_ms)
                    await self.link.call(pipe.execute())

    async def _remove(self, session_id: str) -> None:
        async with self._lock:
            with contextlib.suppress(RedisUnavailable):
                await self.link.call(self.redis.hdel(f"{PREFIX}sessions:{self.worker}",
                                                     session_id))

    # -- heartbeat ----------------------------------------------------------------------------
    async def _heartbeat_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.heartbeat()
            except Exception:  # a bug here must not silently take the worker out of Redis
                log.exception("cluster: heartbeat of worker %s failed", self.worker)

    async def heartbeat(self) -> bool:
        """Push this worker's sessions (the whole set) and read the cluster's figures."""
        sessions = self.sessions.list() if self.sessions is not None else []
        stats = dict(zip([s.id for s in sessions],
                         await asyncio.gather(*(self._stats(s) for s in sessions))))
        async with self._lock:
            live = self.sessions.list() if self.sessions is not None else []
            pairs: list[str] = []
            for session in live:
                pairs += [session.id, self._entry(session, stats.get(session.id, {}))]
            for sid, placeholder in self._reserved.items():
                pairs += [sid, placeholder]
            info = json.dumps({"worker": self.worker, "max_sessions": self.max_sessions,
                               "active_sessions": len(live), "pushed_at": time.time()})
            try:
                count, workers = await self.link.call(self._sync(
                    keys=[WORKERS_KEY],
                    args=[PREFIX, self.worker, self.ttl_ms, self.claim, info, *pairs]))
            except RedisUnavailable:
                return False
            if int(count) < 0:
                if not self.claimed_elsewhere:  # once per episode, not every heartbeat
                    log.error("cluster: worker id %s is held by another process (its claim "
                              "lapses in %d ms unless renewed); this worker's sessions are "
                              "not registered meanwhile", self.worker, int(workers))
                self.claimed_elsewhere = True
                return False
            self.claimed_elsewhere = False
            self.cluster_sessions, self.cluster_workers = int(count), int(workers)
            if not self._registered:
                self._registered = True
                log.info("worker %s registered in Redis %s with its %d sessions (%d workers, "
                         "%d sessions)", self.worker, redact_url(self.url), len(live), workers,
                         count)
        return True

    async def _stats(self, session: Session) -> dict[str, Any]:
        transport = session.transport
        if transport is None or session.closing:
            return {}
        try:
            return await within(transport.stats(), STATS_TIMEOUT_S)
        except Exception:  # closing under us, or slow: pushed without stats this time
            return {}

    def _entry(self, session: Session, stats: dict[str, Any]) -> str:
        return json.dumps({**session.info.as_dict(), "worker": self.worker, "stats": stats,
                           "pushed_at": time.time()}, default=str)

    # -- reading ------------------------------------------------------------------------------
    async def workers(self) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]] | None:
        """Every live worker: (id, its info, its sessions' entries); None while Redis is
        unreachable (the caller shows this worker's own sessions only)."""
        if self.state != "ok":
            return None
        try:
            rows = await self.link.call(self._list(keys=[WORKERS_KEY],
                                                   args=[PREFIX, self.worker, self.ttl_ms]))
        except RedisUnavailable:
            return None
        out = []
        for worker, info, flat in rows:
            entries = [_loads(v) for v in flat[1::2]]
            out.append((worker, _loads(info), [e for e in entries if e]))
        return out

    async def remote_sessions(self) -> list[dict[str, Any]] | None:
        """Other workers' sessions as last pushed (reserved slots left out); None: no Redis."""
        workers = await self.workers()
        if workers is None:
            return None
        now = time.time()
        out = []
        for worker, _info, entries in workers:
            if worker == self.worker:
                continue
            for entry in entries:
                if entry.get("reserved") or not isinstance(entry.get("session_id"), str):
                    continue
                entry["worker"] = worker
                if isinstance(entry.get("started_at"), (int, float)):
                    entry["duration_s"] = round(now - entry["started_at"], 3)
                out.append(entry)
        return out

    async def read_transcript(self, session_id: str) -> list[dict[str, Any]] | None:
        """A session's transcript as mirrored by the worker that held it; None if Redis has
        none (or is unreachable)."""
        if self.state != "ok":
            return None
        try:
            lines = await self.link.call(self.redis.lrange(transcript_key(session_id), 0, -1))
        except RedisUnavailable:
            return None
        records = [r for r in (_loads(line) for line in lines) if r]
        return records or None

    def health(self) -> dict[str, Any]:
        """For /v3/health: no Redis call, the figures of the last heartbeat."""
        body: dict[str, Any] = {"redis": self.state, "url": redact_url(self.url),
                                "registry_ttl_s": self.ttl_ms / 1000,
                                "capacity": self.max_sessions}
        if self.state == "ok" and self.cluster_sessions is not None:
            body.update(workers=self.cluster_workers, sessions=self.cluster_sessions,
                        load=round(min(1.0, self.cluster_sessions / self.max_sessions), 3))
        if self.down_since is not None:
            body["down_s"] = round(time.monotonic() - self.down_since, 1)
        return body

    # -- plumbing -----------------------------------------------------------------------------
    def _redis_changed(self, up: bool) -> None:
        """The link's outage began (``up`` False) or ended; it logged that already."""
        if up:
            self.wake()  # register every session again now (a restarted Redis lost them)
            self.mirror.wake()
        else:
            self._registered = False
            self.mirror.outage()

    def wake(self) -> None:
        """Heartbeat now (tests, and whoever sees Redis come back)."""
        self._wake.set()


class WorkerIdInUse(RuntimeError):
    """Another live process registers under this worker's ``server.worker_id``."""


def _loads(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}

