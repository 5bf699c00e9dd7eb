"""The worker's one Redis link (server/redis_link.py): the registry (cluster.py) and the resume
store (resume_store.py) share its client and its outage, logged once for both."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.redis_server import RedisServer, free_port, running_redis
from voice_agent.server.cluster import PREFIX, ClusterRegistry
from voice_agent.server.redis_link import RedisLink, RedisUnavailable
from voice_agent.server.resume_store import RedisConversationStore, ResumeError, new_token
from voice_agent.server.sessions import SessionManager

HISTORY = [{"role": "user", "text": "Hello.", "interrupted": False}]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_one_outage_for_the_registry_and_the_resume_store(
        redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    link = RedisLink(redis_server.url)
    sessions = SessionManager(2, 60, 600, worker="w")
    cluster = ClusterRegistry(link, worker="w", max_sessions=2, ttl_s=30,
                              transcripts_dir=tmp_path)
    store = RedisConversationStore(link)
    assert store.link.redis is cluster.redis  # one client, one connection pool
    await cluster.start(sessions)  # heartbeats every 10 s: only a wake makes one sooner
    try:
        session = sessions.create()
        token = new_token()
        await store.save(token, HISTORY)
        assert link.up and cluster.state == "ok"

        redis_server.stop()
        assert not await cluster.heartbeat()
        with pytest.raises(ResumeError) as err:
            await store.save(token, HISTORY)
        assert err.value.reason == "unavailable"
        assert not link.up and cluster.state == "down" and cluster.health()["redis"] == "down"
        assert len(messages(caplog, "unreachable")) == 1  # not one per user, nor per call

        redis_server.start()  # empty: Redis lost everything
        await store.save(token, HISTORY)  # the store's call ends the outage for both ...
        assert link.up and cluster.state == "ok"
        assert len(messages(caplog, "Redis is back")) == 1
        # ... and the registry's heartbeat runs at once, registering the session again.
        key = f"{PREFIX}sessions:w"
        deadline = time.monotonic() + 5
        while not await link.redis.hexists(key, session.id):
            assert time.monotonic() < deadline, "the session was not registered again"
            await asyncio.sleep(0.05)
        assert await store.load(token) == HISTORY
        assert len(messages(caplog, "unreachable")) == 1
    finally:
        if redis_server.proc is None:
            redis_server.start()
        await sessions.close_all()
        await store.aclose()
        await cluster.stop()
        await link.aclose()


async def test_a_redis_nobody_answers_is_unavailable_not_a_crash() -> None:
    store = RedisConversationStore(RedisLink(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(ResumeError, match="unreachable"):
        await store.save(new_token(), HISTORY)
    with pytest.raises(ResumeError) as err:
        await store.load(new_token())
    assert err.value.reason == "unavailable"
    await store.aclose()
    await store.link.aclose()
    with pytest.raises(ValueError):  # not a Redis URL: refused when the app is made
        RedisLink("http://not-redis.invalid/0")


async def test_an_answer_sent_before_the_outage_does_not_end_it(
        caplog: pytest.LogCaptureFixture) -> None:
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0")  # nobody there
    seen: list[bool] = []
    link.watch(seen.append)

    async def answer(delay_s: float) -> str:
        await asyncio.sleep(delay_s)
        return "PONG"

    early = asyncio.ensure_future(link.call(answer(0.3)))
    await asyncio.sleep(0)  # sent now, answered later
    with pytest.raises(RedisUnavailable):
        await link.call(link.redis.ping())
    assert await early == "PONG"
    assert link.state == "down" and seen == [False]  # still down: it proves nothing now
    assert await link.call(answer(0)) == "PONG"
    assert link.up and seen == [False, True]
    assert len(messages(caplog, "unreachable")) == len(messages(caplog, "Redis is back")) == 1
    with pytest.raises(RedisUnavailable):
        await link.call(answer(1), timeout_s=0.05)  # too slow counts as unreachable
    assert not link.up
    await link.aclose()
