"""A remote LLM that fails, hangs and comes back, through the real pipeline (real STT/TTS/VAD).

The remote service is the only stand-in: a loopback server speaking the OpenAI streaming protocol.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from voice_agent.core.config import load_config
from voice_agent.core.events import ErrorEvent, ResponseEvent
from voice_agent.pipeline.agent import VoicePipeline
from voice_agent.pipeline.sink import BufferSink
from voice_agent.services.factory import build_services, load_services
from tests.helpers.fake_openai import FakeOpenAI

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def fake():
    f = FakeOpenAI().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def config(fake):
    # espeak speaks the apology in milliseconds, so turn timings here are the breaker's own;
    # reset_timeout_s is the default (1 s): a provider that comes back is used within 1 s.
    return load_config(ai={"provider": "openai", "base_url": fake.base_url, "api_key": "sk-test-secret",
                           "remote_model": "fake-model", "timeout_s": 1.0},
                       voice={"provider": "espeak"},
                       recovery={"attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02,
                                 "failure_threshold": 2})


@pytest.fixture(scope="module")
async def services(config):
    s = build_services(config)
    await load_services(s)
    yield s
    s.close()  # free the model's memory and threads before the next module loads its own


class Recorder(list):
    async def __call__(self, event) -> None:
        self.append(event)


async def turn(pipeline, text: str, rec: Recorder) -> tuple[list[ResponseEvent], list[ErrorEvent]]:
    start = len(rec)
    await pipeline.push_text(text)
    await pipeline.drain()
    new = rec[start:]
    return ([e for e in new if isinstance(e, ResponseEvent) and e.final],
            [e for e in new if isinstance(e, ErrorEvent)])


async def test_remote_llm_streams_over_the_openai_protocol(services, config, fake):
    fake.mode = "ok"
    rec, sink = Recorder(), BufferSink()
    p = VoicePipeline(services, config, emit=rec, sink=sink)
    replies, errors = await turn(p, "What is the capital of France?", rec)
    assert errors == [] and "Paris" in replies[0].text
    req = fake.requests[-1]
    assert req["auth"] == "Bearer sk-test-secret" and req["body"]["stream"] is True
    assert req["body"]["messages"][0]["role"] == "system"
    assert req["body"]["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    assert len(sink.audio()[0]) > 10_000
    await p.close()


async def test_failures_are_retried_then_the_circuit_opens_then_recovers(services, config, fake):
    rec, sink = Recorder(), BufferSink()
    p = VoicePipeline(services, config, emit=rec, sink=sink)
    fake.mode, before = "error", len(fake.requests)
    replies, errors = await turn(p, "Hello?", rec)
    # Retried (2 attempts), then the caller gets a typed error, and hears an apology, not silence.
    assert len(fake.requests) - before == 2
    assert [e.code for e in errors] == ["provider_error"] and "HTTP 503" in errors[0].message
    assert "sk-test-secret" not in errors[0].message
    assert len(sink.audio()[0]) > 22050 // 2, "no spoken apology"
    assert p.conversation.history[-1] == {**p.conversation.history[-1], "role": "user", "text": "Hello?"}

    # Two consecutive failures opened the circuit: the next turn is refused without a request.
    before = len(fake.requests)
    replies, errors = await turn(p, "Hello again?", rec)
    assert [e.code for e in errors] == ["provider_unavailable"]
    assert len(fake.requests) == before

    # The provider comes back; within the reset timeout (1 s) it is used again.
    fake.mode = "ok"
    came_back = time.monotonic()
    for _ in range(40):
        replies, errors = await turn(p, "Are you back?", rec)
        if replies and not errors:
            break
        await asyncio.sleep(0.05)
    assert replies and "Paris" in replies[0].text
    first_ok_request = fake.requests[-1]["at"]
    assert first_ok_request - came_back < 1.0 + 0.3, "not used again within 1 s of coming back"
    await p.close()


async def test_a_hung_provider_times_out_with_a_typed_error(services, config, fake):
    fake.mode = "hang"
    rec, sink = Recorder(), BufferSink()
    p = VoicePipeline(services, config, emit=rec, sink=sink)
    t0 = time.monotonic()
    replies, errors = await turn(p, "Anyone there?", rec)
    took = time.monotonic() - t0
    assert errors and errors[0].code in ("provider_timeout", "provider_unavailable")
    assert errors[0].code == "provider_timeout"
    assert took < 2 * 1.0 + 3.0, f"hung call took {took:.1f}s"  # 2 attempts x 1 s timeout + apology
    fake.mode = "ok"
    await p.close()
