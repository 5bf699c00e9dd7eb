"""The shared registry (server/cluster.py) against a real redis-server: two workers in one
process, each with its own SessionManager and Redis link (redis_link.py), as two processes
would be."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers.redis_server import RedisServer, running_redis
from voice_agent.server import cluster_admission
from voice_agent.server.cluster import PREFIX, ClusterRegistry, WorkerIdInUse
from voice_agent.server.cluster_admission import (ClusterAdmission, redact_url, url_password)
from voice_agent.server.redis_link import RedisLink
from voice_agent.server.sessions import ServerBusyError, Session, SessionManager

TTL_S = 1.5


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def flushed(redis_server: RedisServer) -> AsyncIterator[RedisServer]:
    if redis_server.proc is None:  # a test stopped it
        redis_server.start()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server


class Worker:
    """One worker's registry side: its sessions, its Redis link and its ClusterRegistry."""

    def __init__(self, url: str, name: str, folder: Path, max_sessions: int = 2) -> None:
        self.name = name
        self.sessions = SessionManager(max_sessions, 60, 600, worker=name)
        self.link = RedisLink(url)
        self.cluster = ClusterRegistry(self.link, worker=name, max_sessions=max_sessions,
                                       ttl_s=TTL_S, transcripts_dir=folder / name)

    async def stop(self) -> None:
        """As app.py's shutdown: the sessions, the registry, then the link."""
        await self.sessions.close_all()
        await self.cluster.stop()
        await self.link.aclose()

    async def open(self) -> Session:
        """As a session socket is handled: the middleware's reservation, then create()."""
        admission = await self.cluster.reserve()
        token = cluster_admission._admission.set(admission)
        try:
            return self.sessions.create()
        finally:
            cluster_admission._admission.reset(token)

    async def listed(self) -> dict[str, str]:
        """Every session this worker's /v3/sessions shows: id -> worker."""
        mine = {s.id: s.info.worker or "" for s in self.sessions.list()}
        return {**mine, **{e["session_id"]: e["worker"]
                           for e in await self.cluster.remote_sessions() or []}}


@pytest.fixture
async def workers(flushed: RedisServer, tmp_path: Path) -> AsyncIterator[list[Worker]]:
    made = [Worker(flushed.url, name, tmp_path) for name in ("a", "b")]
    for w in made:
        await w.cluster.start(w.sessions)
    yield made
    for w in made:
        await w.stop()


async def until(check: Any, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_each_worker_lists_both_workers_sessions_with_their_worker(workers) -> None:
    a, b = workers
    sa, sb = await a.open(), await b.open()
    assert (sa.info.worker, sb.info.worker) == ("a", "b")
    expected = {sa.id: "a", sb.id: "b"}
    assert await until(lambda: _equal(a.listed(), expected))
    assert await until(lambda: _equal(b.listed(), expected))
    remote = (await a.cluster.remote_sessions())[0]
    assert remote["worker"] == "b" and remote["transport"] == "webrtc"
    assert remote["connection_status"] == "connected" and remote["duration_s"] >= 0
    await a.cluster.heartbeat()
    health = a.cluster.health()
    assert (health["redis"], health["workers"], health["sessions"], health["capacity"]) == (
        "ok", 2, 2, 2)
    # Each worker's own figures, as operators read them from va:cluster:info:<worker>.
    await b.cluster.heartbeat()
    infos = {w: info for w, info, _ in await a.cluster.workers() or []}
    assert {w: (i["worker"], i["max_sessions"], i["active_sessions"]) for w, i in infos.items()} \
        == {"a": ("a", 2, 1), "b": ("b", 2, 1)}
    # A closed session leaves every listing at once, not at the next heartbeat.
    await b.sessions.close(sb.id)
    assert await until(lambda: _equal(a.listed(), {sa.id: "a"}))


async def _equal(listed: Any, expected: dict[str, str]) -> bool:
    return await listed == expected


async def test_max_sessions_holds_across_workers_even_when_asked_at_once(workers) -> None:
    a, b = workers  # max_sessions 2 each: 2 across both
    opened = await asyncio.gather(*(w.open() for w in (a, b, a, b, a, b)),
                                  return_exceptions=True)
    sessions = [s for s in opened if isinstance(s, Session)]
    refused = [e for e in opened if isinstance(e, ServerBusyError)]
    assert len(sessions) == 2 and len(refused) == 4, opened
    assert all(e.capacity == 2 and e.active >= 2 for e in refused)
    # A slot freed on one worker is free for the other.
    await a.sessions.close(sessions[0].id)
    for _ in range(20):  # the removal is written in the background
        if isinstance(await _try_open(b), Session):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the freed slot was never admitted")


async def _try_open(worker: Worker) -> Session | ServerBusyError:
    try:
        return await worker.open()
    except ServerBusyError as exc:
        return exc


async def test_a_reserved_slot_no_session_took_is_handed_back(workers) -> None:
    a, b = workers
    first = await a.cluster.reserve()
    second = await b.cluster.reserve()
    assert first.admitted and second.admitted
    assert not (await b.cluster.reserve()).admitted  # both slots reserved
    assert await a.listed() == {}  # reserved slots are not sessions
    a.cluster.release(first.session_id)  # e.g. its socket failed the token check
    assert await until(lambda: _admitted(b))


async def _admitted(worker: Worker) -> bool:
    admission = await worker.cluster.reserve()
    if admission is not None and admission.admitted:
        worker.cluster.release(admission.session_id)
        return True
    return False


async def test_a_dead_workers_sessions_leave_within_its_ttl(workers) -> None:
    a, b = workers
    sa, sb = await a.open(), await b.open()
    assert await until(lambda: _equal(b.listed(), {sa.id: "a", sb.id: "b"}))
    # a stops heartbeating as a killed process would (no goodbye to Redis).
    await a.cluster._tasks.stop()
    killed = time.monotonic()
    assert await until(lambda: _equal(b.listed(), {sb.id: "b"}), timeout_s=TTL_S * 3)
    assert time.monotonic() - killed <= TTL_S + 1.0
    # Its slot is free again for the living.
    assert isinstance(await b.open(), Session)
    async with aioredis.Redis.from_url(b.cluster.url) as client:
        await b.cluster.heartbeat()  # the next script purges a's keys
        assert not await client.exists(f"{PREFIX}sessions:a", f"{PREFIX}info:a")
        assert await client.zscore(f"{PREFIX}workers", "a") is None


async def test_redis_down_then_back(workers, flushed: RedisServer, caplog) -> None:
    a, b = workers
    sa = await a.open()
    flushed.stop()  # SIGKILL: nothing of it survives, as after a crash
    assert not await a.cluster.heartbeat()
    assert not await b.cluster.heartbeat()
    assert a.cluster.state == "down" and a.cluster.health()["redis"] == "down"
    # Nothing waits on Redis now: admission by the worker's own max_sessions, own listings.
    t0 = time.monotonic()
    assert await a.cluster.reserve() is None
    sa2 = a.sessions.create()
    assert await a.cluster.remote_sessions() is None
    assert time.monotonic() - t0 < 0.2
    assert isinstance(await _try_open(a), ServerBusyError)  # its own 2 slots
    for _ in range(3):
        await a.cluster.heartbeat()
    lost = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lost) == 2, [r.getMessage() for r in lost]  # once per worker, not per call
    flushed.start()  # empty: Redis lost everything
    assert await a.cluster.heartbeat() and await b.cluster.heartbeat()
    assert a.cluster.state == "ok"
    assert await b.listed() == {sa.id: "a", sa2.id: "a"}  # registered again
    assert a.cluster.health()["sessions"] == 2


async def test_a_stopped_worker_leaves_the_registry(workers) -> None:
    a, b = workers
    sa = await a.open()
    assert await until(lambda: _equal(b.listed(), {sa.id: "a"}))
    await a.sessions.close_all()
    await a.cluster.stop()
    await b.cluster.heartbeat()
    assert b.cluster.health()["workers"] == 1


async def test_transcripts_are_readable_from_the_other_worker(workers, flushed) -> None:
    from voice_agent.core.events import TranscriptEvent
    from voice_agent.server.transcript_log import TranscriptLog, read_transcript

    a, b = workers
    session = await a.open()
    session.transcript = TranscriptLog(a.cluster.mirror.directory, session.id)
    session.transcript.start(transport="webrtc", mode="streaming")
    session.transcript.event(TranscriptEvent(text="hello", final=True))

    async def mirrored(n: int) -> bool:
        records = await b.cluster.read_transcript(session.id)
        return records is not None and len(records) == n

    assert await until(lambda: mirrored(2))
    flushed.stop()
    await a.cluster.heartbeat()  # the outage noticed
    for word in ("while", "Redis", "was", "down"):
        session.transcript.event(TranscriptEvent(text=word, final=True))
    await a.cluster.mirror.flush()
    flushed.start()  # empty again
    assert await a.cluster.heartbeat() and await b.cluster.heartbeat()
    session.transcript.event(TranscriptEvent(text="after", final=True))
    assert await until(lambda: mirrored(7))
    await a.sessions.close(session.id)
    assert await until(lambda: mirrored(8))
    on_disk = read_transcript(a.cluster.mirror.directory, session.id)
    assert await b.cluster.read_transcript(session.id) == on_disk  # the same, in order, once
    assert [r["type"] for r in on_disk] == ["session_start", *["transcript"] * 6,
                                            "session_end"]
    assert await b.cluster.read_transcript("0" * 32) is None


async def test_the_middleware_reserves_for_session_sockets_only(workers) -> None:
    a, b = workers
    seen: list[Any] = []

    class Registry:
        cluster = a.cluster
        sessions = a.sessions
        services_ready = True

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(cluster_admission.current_admission())
        if scope["path"] == "/ws/v3":
            try:
                a.sessions.create()
            except ServerBusyError as exc:
                seen.append(exc)

    middleware = ClusterAdmission(app, Registry())  # type: ignore[arg-type]
    await middleware({"type": "http", "path": "/v3/sessions"}, None, None)
    assert seen == [None]
    await middleware({"type": "websocket", "path": "/ws/v3"}, None, None)
    admission = seen[-1]
    assert admission.admitted and admission.taken and a.sessions.get(admission.session_id)
    sb = await b.open()  # the last slot, on the other worker
    await middleware({"type": "websocket", "path": "/ws/v3"}, None, None)
    assert isinstance(seen[-1], ServerBusyError) and (seen[-1].capacity,
                                                      seen[-1].active) == (2, 2)
    # A socket refused before create() (token, loading) hands its slot back.
    await a.sessions.close(admission.session_id)
    assert await until(lambda: _equal(b.listed(), {sb.id: "b"}))  # its slot freed
    await middleware({"type": "websocket", "path": "/ws/v3/audio"}, None, None)
    assert seen[-1].admitted and not seen[-1].taken
    assert await until(lambda: _admitted(b))


def test_redis_passwords_are_redacted() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("rediss://me:s3%40cret@host/1") == "rediss://me:***@host/1"
    assert url_password("rediss://me:s3%40cret@host/1") == "s3@cret"
    assert url_password(None) is None and url_password("redis://host") is None


def test_the_app_redacts_the_redis_password_and_reports_its_worker() -> None:
    from fastapi.testclient import TestClient

    from voice_agent.core.config import V3Config
    from voice_agent.server.app import _secrets, create_app

    url = "redis://:s3cret-pw@127.0.0.1:1/0"  # never reached: no lifespan runs here
    config = V3Config(server={"redis_url": url, "worker_id": "w-1"})
    client = TestClient(create_app(config), base_url="http://localhost")
    assert client.get("/v3/config").json()["server"]["redis_url"] == "redis://:***@127.0.0.1:1/0"
    health = client.get("/v3/health").json()
    assert health["worker"] == "w-1" and health["cluster"]["url"] == "redis://:***@127.0.0.1:1/0"
    assert "s3cret-pw" not in client.get("/v3/health").text
    assert "s3cret-pw" in _secrets(config)  # masked in uvicorn's log lines too
    alone = TestClient(create_app(V3Config(server={"worker_id": "w-2"})),
                       base_url="http://localhost").get("/v3/health").json()
    assert alone["worker"] == "w-2" and alone["cluster"] is None


async def test_worker_capacity_and_the_clusters_are_counted_apart(flushed, tmp_path) -> None:
    # Two workers of 2 sessions each, 3 across both: each worker's load is counted against its
    # own 2 (the balancer's weight), the third session anywhere is the cluster's last.
    a, b = (Worker(flushed.url, name, tmp_path, max_sessions=3) for name in ("a", "b"))
    for w in (a, b):
        w.sessions.max_sessions = 2
        await w.cluster.start(w.sessions)
    try:
        await a.open(), await a.open()
        assert a.sessions.load == 1.0  # full for the balancer, though the cluster has room
        with pytest.raises(ServerBusyError):
            a.sessions.create()  # this worker's own cap, without asking Redis
        assert b.sessions.load == 0.0
        await b.open()
        refused = await _try_open(b)
        assert isinstance(refused, ServerBusyError) and refused.capacity == 3
    finally:
        for w in (a, b):
            await w.stop()


def test_worker_max_sessions_is_this_workers_capacity_and_max_sessions_the_clusters() -> None:
    from fastapi.testclient import TestClient

    from voice_agent.core.config import V3Config
    from voice_agent.server.app import create_app

    config = V3Config(server={"redis_url": "redis://127.0.0.1:1/0", "max_sessions": 4,
                              "worker_max_sessions": 2})
    app = create_app(config)
    registry = app.state.registry
    assert (registry.sessions.max_sessions, registry.cluster.max_sessions) == (2, 4)
    health = TestClient(app, base_url="http://localhost").get("/v3/health").json()
    assert (health["capacity"], health["max_sessions"]) == (2, 2)
    alone = create_app(V3Config(server={"max_sessions": 3})).state.registry
    assert alone.sessions.max_sessions == 3 and alone.cluster is None


async def test_a_second_live_worker_with_the_same_id_is_refused_at_start(
        flushed: RedisServer, tmp_path: Path) -> None:
    """Two processes under one server.worker_id would overwrite each other's sessions in the
    registry at every heartbeat: the second is refused, the first keeps its sessions."""
    first = Worker(flushed.url, "a", tmp_path / "1")
    await first.cluster.start(first.sessions)
    session = await first.open()
    second = Worker(flushed.url, "a", tmp_path / "2")
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerIdInUse, match="worker_id 'a' is held by another live worker"):
            await second.cluster.start(second.sessions)
        assert time.monotonic() - t0 >= TTL_S  # it waited out a crashed predecessor's claim
        await first.cluster.heartbeat()
        assert not first.cluster.claimed_elsewhere
        client = aioredis.Redis.from_url(flushed.url)
        try:
            kept = await client.hkeys(f"{PREFIX}sessions:a")
        finally:
            await client.aclose()
        assert [k.decode() for k in kept] == [session.id]
    finally:
        await second.stop()  # leaves the first one's claim alone
        await first.stop()


async def test_a_restarted_worker_takes_its_id_back(flushed: RedisServer, tmp_path: Path) -> None:
    """After a clean stop at once; after a crash (no stop: its claim stays) within the TTL."""
    before = Worker(flushed.url, "a", tmp_path / "1")
    await before.cluster.start(before.sessions)
    await before.stop()
    again = Worker(flushed.url, "a", tmp_path / "2")
    t0 = time.monotonic()
    await again.cluster.start(again.sessions)
    assert time.monotonic() - t0 < TTL_S / 2
    await again.cluster._tasks.stop()  # a crash: no more heartbeats, nothing removed
    await again.link.aclose()
    after = Worker(flushed.url, "a", tmp_path / "3")
    try:
        t0 = time.monotonic()
        await after.cluster.start(after.sessions)
        assert time.monotonic() - t0 < TTL_S * 1.5
        assert not after.cluster.claimed_elsewhere
        await after.open()
        assert await until(lambda: _count(after, 1))
    finally:
        await after.stop()


async def _count(worker: Worker, n: int) -> bool:
    await worker.cluster.heartbeat()
    return worker.cluster.cluster_sessions == n
