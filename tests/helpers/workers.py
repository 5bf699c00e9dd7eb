"""Real ``voice-agent serve`` workers for the several-workers tests: the smallest local models
(Whisper tiny.en, espeak) and the OpenAI-compatible stand-in as the LLM, so that answers are
instant and the same every run (what those tests check is the registry and the resume, not a
model); with a shared real redis-server when given one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.server_proc import ServerProcess
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.redis_server import RedisServer


def worker(name: str, redis: RedisServer | None, fake: FakeOpenAI, *,
           max_sessions: int) -> ServerProcess:
    # Each worker has its own transcripts folder (ServerProcess makes one per process), as
    # workers on two machines would.
    shared = {"VOICE_AGENT_SERVER__REDIS_URL": redis.url} if redis is not None else {}
    return ServerProcess("streaming", {
        **shared,
        "VOICE_AGENT_SERVER__WORKER_ID": name,
        "VOICE_AGENT_AI__PROVIDER": "openai", "VOICE_AGENT_AI__BASE_URL": fake.base_url,
        "VOICE_AGENT_AI__API_KEY": "sk-test-secret",
        "VOICE_AGENT_STT__MODEL": "tiny.en", "VOICE_AGENT_STT__THREADS": "1",
        "VOICE_AGENT_VOICE__PROVIDER": "espeak",
    }, max_sessions=max_sessions, ready_timeout_s=90)


def fake_llm_fixture(reply: str):  # type: ignore[no-untyped-def]
    """A ``fake_llm`` fixture answering ``reply`` (a test may change ``fake.reply``)."""

    @pytest.fixture
    def fake_llm() -> Iterator[FakeOpenAI]:
        fake = FakeOpenAI(reply=reply).start()
        yield fake
        fake.stop()

    return fake_llm
