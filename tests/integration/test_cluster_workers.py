"""Issue #17's acceptance for the shared registry: two real ``voice-agent serve`` workers on
loopback and a real ``redis-server``.

A session on each; either worker lists both with their worker; ``server.max_sessions`` (2)
holds across both (a third session is refused ``busy`` on either); a transcript is read from
the worker that did not hold it; Redis killed: both say ``degraded``, both conversations still
answer, and once Redis is back both are registered again; ``kill -9`` of one worker: its
session leaves the other's listing within 10 s and the other's conversation still answers.

The workers load Whisper tiny.en and espeak; the LLM is the OpenAI-compatible stand-in on
loopback (tests/helpers/fake_openai.py), so that the answers are instant and the same every
run: what is tested is the registry, not a model.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from bench.server_proc import ServerProcess
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.redis_server import RedisServer
from tests.helpers.workers import fake_llm_fixture, worker
from tests.integration.conftest import Client, connect

pytestmark = pytest.mark.models

REPLY = "Paris is the capital of France."
fake_llm = fake_llm_fixture(REPLY)


async def get(server: ServerProcess, path: str) -> Any:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        response = await http.get(path)
        assert response.status_code == 200, (path, response.text)
        return response.json()


async def listed(server: ServerProcess) -> dict[str, str]:
    """Session id -> worker, as this worker's /v3/sessions shows them."""
    return {s["session_id"]: s["worker"] for s in await get(server, "/v3/sessions")}


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.1)


async def lists(server: ServerProcess, expected: dict[str, str]) -> bool:
    return await listed(server) == expected


async def cluster_state(server: ServerProcess, status: str, redis_state: str) -> bool:
    health = await get(server, "/v3/health")
    return health["status"] == status and health["cluster"]["redis"] == redis_state


async def answers(client: Client, text: str) -> None:
    start = len(client.messages)
    await client.send({"type": "text", "text": text})
    reply = await client.wait_type("ai_response", 20, start, final=True)
    assert reply["text"].strip() == REPLY


async def replies_in_transcript(server: ServerProcess, session_id: str, replies: int) -> Any:
    """The transcript as ``server`` reads it, once it holds this many replies (else None)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        response = await http.get(f"/v3/sessions/{session_id}/transcript")
    if response.status_code == 404:  # not in Redis (yet)
        return None
    assert response.status_code == 200, response.text
    body = response.json()
    return body if sum(r["type"] == "ai_response" for r in body["records"]) == replies else None


async def refused_busy(server: ServerProcess) -> None:
    async with connect(f"ws://127.0.0.1:{server.port}/ws/v3") as third:
        err = await third.wait_type("error", 5)
        assert await third.wait_closed() == 1013
    assert third.messages == [err]  # up front: nothing of a session was made
    assert err["code"] == "busy" and err["fatal"] is True and err["retry_after_s"] > 0
    assert (err["capacity"], err["active_sessions"]) == (2, 2)


async def test_two_workers_share_one_registry_and_outlive_each_others_faults(
        redis: RedisServer, fake_llm: FakeOpenAI) -> None:
    one, two = (worker(name, redis, fake_llm, max_sessions=2)
                                      for name in ("worker1", "worker2"))
    await asyncio.gather(asyncio.to_thread(one.start), asyncio.to_thread(two.start))
    try:
        async with connect(f"ws://127.0.0.1:{one.port}/ws/v3") as c1, \
                connect(f"ws://127.0.0.1:{two.port}/ws/v3/audio") as c2:
            id1 = (await c1.wait_type("connection_established"))["session_id"]
            id2 = (await c2.wait_type("connection_established"))["session_id"]
            both = {id1: "worker1", id2: "worker2"}
            # Either worker lists both, each with its worker.
            for server in (one, two):
                await until(lambda: lists(server, both), f"{server.port} lists both")
            stats = await get(two, "/v3/webrtc/stats")
            assert stats["active_sessions"] == 2 and stats["worker"] == "worker2"
            assert stats["sessions"][id1]["worker"] == "worker1"
            assert stats["sessions"][id1]["live"] is False  # pushed by worker1's heartbeat
            assert (stats["sessions"][id2]["worker"], stats["sessions"][id2]["live"]) == (
                "worker2", True)
            health = await get(one, "/v3/health")
            assert health["worker"] == "worker1" and health["status"] == "ok"
            assert health["load"] == 0.5  # this worker's own: 1 of its 2
            # max_sessions (2) holds across both workers: a third is refused on either.
            await refused_busy(one)
            await refused_busy(two)

            # A conversation's transcript, read on the worker that did not hold it.
            await answers(c1, "What is the capital of France?")

            body = await until(lambda: replies_in_transcript(two, id1, 1),
                               "worker1's transcript on worker2", 5)
            assert body["active"] is True
            assert [r["type"] for r in body["records"]][:2] == ["session_start", "transcript"]

            # Redis down: each worker serves its own sessions and says degraded.
            redis.stop()
            for server in (one, two):
                await until(lambda: cluster_state(server, "degraded", "down"),
                            f"{server.port} degraded", 5)
            await answers(c1, "And of Italy?")
            await answers(c2, "And of Spain?")
            assert await listed(one) == {id1: "worker1"}
            # Redis back (empty: it kept nothing): both register their sessions again.
            redis.start()
            for server in (one, two):
                await until(lambda: cluster_state(server, "ok", "ok"), f"{server.port} ok", 5)
                await until(lambda: lists(server, both), f"{server.port} lists both again", 5)
            # worker1 wrote its transcript again from its disk, the turn in the outage included.
            await until(lambda: replies_in_transcript(two, id1, 2),
                        "worker1's whole transcript on worker2", 5)

            # kill -9 of worker1: its session leaves the registry within 10 s ...
            os.kill(one.pid, signal.SIGKILL)
            killed = time.monotonic()
            await until(lambda: lists(two, {id2: "worker2"}), "worker1's session gone", 10)
            gone_s = time.monotonic() - killed
            assert gone_s < 10, gone_s
            print(f"worker1's session left worker2's listing {gone_s:.1f} s after kill -9")
            # ... and worker2's conversation goes on untouched, its slot count right again.
            await answers(c2, "What is the capital of France?")
            assert (await get(two, "/v3/health"))["cluster"]["sessions"] == 1
            # worker1's transcript is still readable, from Redis.
            body = await get(two, f"/v3/sessions/{id1}/transcript")
            assert body["active"] is False
            assert sum(r["type"] == "ai_response" for r in body["records"]) == 2
            async with connect(f"ws://127.0.0.1:{two.port}/ws/v3") as c3:  # the freed slot
                await c3.wait_type("connection_established")
    finally:
        one.stop()
        two.stop()
    log_two = two.last_log
    assert "unreachable" in log_two and "Redis is back" in log_two
