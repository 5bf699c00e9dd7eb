"""Issue #17: ``kill -9`` of a worker, and the client carries its conversation on at another
worker, from the history in a shared, real redis-server, with the resume token it holds.

Two real ``voice-agent serve`` processes on loopback (Whisper tiny.en, espeak; the LLM is the
OpenAI-compatible stand-in on loopback, which records every prompt it is sent: what the model
is told does not depend on a model's quality). A conversation of typed messages on worker 1,
worker 1 killed with SIGKILL, the client on worker 2 with its token: ``resumed`` gives back
the earlier turns, and worker 2's next prompt to the model holds them. Then Redis dies: resume
fails, not the sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal

import httpx
import pytest

from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.redis_server import RedisServer
from tests.helpers.workers import fake_llm_fixture, worker
from tests.integration.conftest import Client, connect

pytestmark = pytest.mark.models

FIRST = "My name is Ada and my favourite colour is teal."
FIRST_REPLY = "Nice to meet you, Ada."
SECOND = "Which colour do I like?"
SECOND_REPLY = "You like teal."
fake_llm = fake_llm_fixture(FIRST_REPLY)


async def say(client: Client, text: str) -> dict:
    start = len(client.messages)
    await client.send({"type": "text", "text": text})
    return await client.wait_type("ai_response", 20, start, final=True)


async def saved(redis: RedisServer, token: str, texts: list[str], timeout_s: float = 5) -> None:
    """Wait until Redis holds the conversation of ``token`` with these texts."""
    from redis.asyncio import Redis

    key = "voice-agent:resume:" + hashlib.sha256(token.encode()).hexdigest()
    client = Redis.from_url(redis.url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            raw = await client.get(key)
            got = [m["text"] for m in json.loads(raw)["history"]] if raw else []
            if got == texts:
                return
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def prompt_texts(fake: FakeOpenAI) -> list[tuple[str, str]]:
    """The last chat prompt the model was sent: (role, text) after the system prompt."""
    body = [r for r in fake.requests if r.get("path", "").endswith("/chat/completions")][-1]["body"]
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]


async def test_a_conversation_goes_on_at_another_worker_after_kill_9(
        redis: RedisServer, fake_llm: FakeOpenAI) -> None:
    one, two = (worker(name, redis, fake_llm, max_sessions=4)
                                      for name in ("worker1", "worker2"))
    await asyncio.gather(asyncio.to_thread(one.start), asyncio.to_thread(two.start))
    logs: list[str] = []
    try:
        async with connect(f"ws://127.0.0.1:{one.port}/ws/v3") as first:
            hello = await first.wait_type("connection_established")
            token = hello["resume_token"]
            assert isinstance(token, str) and len(token) >= 43
            reply = await say(first, FIRST)
            assert reply["text"].strip() == FIRST_REPLY
            await saved(redis, token, [FIRST, FIRST_REPLY])  # saved once the turn ended
            os.kill(one.pid, signal.SIGKILL)
            await asyncio.to_thread(one.proc.wait, 10)
            await first.wait_closed(10)

        fake_llm.reply = SECOND_REPLY
        async with connect(f"ws://127.0.0.1:{two.port}/ws/v3") as second:
            hello2 = await second.wait_type("connection_established")
            assert hello2["resume_token"] != token
            async with httpx.AsyncClient(base_url=two.base_url) as http:  # never listed
                assert token not in (await http.get("/v3/sessions")).text
                assert hello2["resume_token"] not in (await http.get("/v3/sessions")).text
            await second.send({"type": "resume", "token": token})
            resumed = await second.wait_type("resumed", 10)
            assert resumed["resume_token"] == hello2["resume_token"]
            assert resumed["history"] == [
                {"role": "user", "text": FIRST, "interrupted": False},
                {"role": "assistant", "text": FIRST_REPLY, "interrupted": False}]
            reply = await say(second, SECOND)
            assert reply["text"].strip() == SECOND_REPLY
            # What worker 2 asked the model: the turn worker 1 had, then the new question.
            assert prompt_texts(fake_llm) == [("user", FIRST), ("assistant", FIRST_REPLY),
                                              ("user", SECOND)]
            await saved(redis, hello2["resume_token"], [FIRST, FIRST_REPLY, SECOND,
                                                        SECOND_REPLY])
            # Once resumed, not again; the session goes on.
            start = len(second.messages)
            await second.send({"type": "resume", "token": token})
            error = await second.wait_type("error", 10, start)
            assert error["code"] == "resume_failed" and error["fatal"] is False

        # A token nobody gave: a fresh conversation, told so, not a crash.
        async with connect(f"ws://127.0.0.1:{two.port}/ws/v3/audio") as third:
            await third.wait_type("connection_established")
            await third.send({"type": "resume", "token": "A" * 43})
            error = await third.wait_type("error", 10)
            assert error["code"] == "resume_failed" and error["fatal"] is False
            assert "unknown or expired" in error["message"]
            await say(third, "Hello?")
            assert prompt_texts(fake_llm) == [("user", "Hello?")]

        # Redis down: resume is unavailable, said once in the log; the sessions go on.
        redis.stop()
        async with connect(f"ws://127.0.0.1:{two.port}/ws/v3") as fourth:
            await fourth.wait_type("connection_established")
            await fourth.send({"type": "resume", "token": hello2["resume_token"]})
            error = await fourth.wait_type("error", 10)
            assert error["code"] == "resume_failed" and "unreachable" in error["message"]
            for question in ("Still there?", "And now?"):
                assert (await say(fourth, question))["text"].strip() == SECOND_REPLY
        logs = [one.log_path.read_text(errors="replace"), two.log_path.read_text(errors="replace")]
    finally:
        one.stop()
        two.stop()
    assert "resumed a conversation of 2 messages" in logs[1]
    assert logs[1].count("Redis is unreachable") == 1  # one link: the store and the registry
    for log in logs:
        assert token not in log and hello2["resume_token"] not in log


async def test_without_redis_a_client_that_lost_its_connection_resumes_on_the_same_worker(
        fake_llm: FakeOpenAI) -> None:
    """No ``server.redis_url``: the worker's memory keeps the conversation (a network drop)."""
    alone = worker("alone", None, fake_llm, max_sessions=4)
    await asyncio.to_thread(alone.start)
    try:
        async with connect(f"ws://127.0.0.1:{alone.port}/ws/v3/audio") as first:
            token = (await first.wait_type("connection_established"))["resume_token"]
            await say(first, FIRST)
            first.ws.transport.abort()  # the network is gone: no close frame
            await first.wait_closed(10)
        fake_llm.reply = SECOND_REPLY
        async with connect(f"ws://127.0.0.1:{alone.port}/ws/v3") as second:
            await second.wait_type("connection_established")
            await second.send({"type": "resume", "token": token})
            resumed = await second.wait_type("resumed", 10)
            assert [m["text"] for m in resumed["history"]] == [FIRST, FIRST_REPLY]
            await say(second, SECOND)
            assert prompt_texts(fake_llm) == [("user", FIRST), ("assistant", FIRST_REPLY),
                                              ("user", SECOND)]
    finally:
        alone.stop()
