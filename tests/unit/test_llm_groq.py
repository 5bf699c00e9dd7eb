"""Groq as a preset of the OpenAI-compatible adapter (services/llm_groq.py), against the fake
OpenAI server's Groq root (/openai/v1) on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import pytest

from tests.helpers.fake_openai import FakeOpenAI
from voice_agent.core.config import ConfigError, load_config
from voice_agent.core.errors import ProviderError
from voice_agent.core.messages import ChatMessage
from voice_agent.services import registry
from voice_agent.services.llm_groq import GROQ_BASE_URL, GROQ_DEFAULT_MODEL, GroqLLM
from voice_agent.services.llm_openai import OpenAICompatibleLLM

KEY = "gsk_test_secret"
ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?")]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    f = FakeOpenAI(api_key=KEY).start()
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def _reset(fake: FakeOpenAI) -> None:
    fake.mode, fake.first_delay_s = "ok", 0.0
    fake.requests.clear()


def groq(fake: FakeOpenAI, **ai: object) -> GroqLLM:
    llm = registry.create("llm", load_config(ai={"provider": "groq", "api_key": KEY,
                                                 "base_url": fake.groq_base_url, **ai}))
    assert isinstance(llm, GroqLLM) and isinstance(llm, OpenAICompatibleLLM)
    return llm


def test_the_preset_defaults_and_what_the_user_sets_wins() -> None:
    llm = GroqLLM(load_config(ai={"provider": "groq", "api_key": KEY}))
    assert (llm.config.base_url, llm.config.remote_model) == (GROQ_BASE_URL, GROQ_DEFAULT_MODEL)
    llm = GroqLLM(load_config(ai={"provider": "groq", "api_key": KEY,
                                  "remote_model": "llama-3.1-8b-instant"}))
    assert llm.config.remote_model == "llama-3.1-8b-instant"
    assert llm.config.base_url == GROQ_BASE_URL


def test_env_vars(monkeypatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_AI__PROVIDER", "groq")
    monkeypatch.setenv("VOICE_AGENT_AI__API_KEY", KEY)
    llm = registry.create("llm", load_config())
    assert isinstance(llm, GroqLLM) and llm.config.base_url == GROQ_BASE_URL


def test_a_missing_key_fails_at_start_up_naming_the_env_var() -> None:
    with pytest.raises(ConfigError, match="VOICE_AGENT_AI__API_KEY"):
        registry.create("llm", load_config(ai={"provider": "groq"}))


async def test_streams_from_the_groq_root_with_the_bearer_key(fake) -> None:
    text = "".join([t async for t in groq(fake).stream(ASK)])  # type: ignore[misc]
    assert "Paris" in text
    (req,) = fake.requests
    assert req["path"] == "/openai/v1/chat/completions"
    assert req["auth"] == f"Bearer {KEY}"
    assert req["body"]["model"] == GROQ_DEFAULT_MODEL and req["body"]["stream"] is True


async def test_a_slow_first_token_still_arrives(fake) -> None:
    fake.first_delay_s = 0.5
    t0 = time.monotonic()
    text = "".join([t async for t in groq(fake).stream(ASK)])  # type: ignore[misc]
    assert "Paris" in text and time.monotonic() - t0 >= 0.5


async def test_a_rejected_key_is_a_clear_non_retryable_error(fake, caplog) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as err:
        [t async for t in groq(fake, api_key="gsk_wrong_secret").stream(ASK)]  # type: ignore[misc]
    assert not err.value.retryable
    assert "API key was rejected" in str(err.value) and "VOICE_AGENT_AI__API_KEY" in str(err.value)
    assert "gsk_wrong_secret" not in str(err.value) and "gsk_wrong_secret" not in caplog.text


async def test_the_key_is_checked_at_start_up(fake, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ProviderError, match="API key was rejected"):
            await asyncio.to_thread(groq(fake, api_key="gsk_wrong_secret").warmup)
        await asyncio.to_thread(groq(fake).warmup)
    assert fake.requests[-1]["path"] == "/openai/v1/models"
    assert KEY not in caplog.text and "gsk_wrong_secret" not in caplog.text


def test_the_key_is_redacted_in_the_config_dump() -> None:
    config = load_config(ai={"provider": "groq", "api_key": KEY})
    assert KEY not in json.dumps(config.redacted())


async def test_closing_the_stream_early_is_quick(fake) -> None:
    fake.reply = " ".join(["word"] * 200)
    try:
        stream = groq(fake).stream(ASK)
        await anext(stream)
        t0 = time.monotonic()
        await stream.aclose()
        assert time.monotonic() - t0 < 0.5  # the interface asks 100 ms; slack for a busy CI
    finally:
        fake.reply = "The capital of France is Paris."


async def test_groq_is_never_asked_for_llama_cpp_endpoints(fake) -> None:
    llm = groq(fake)
    assert llm.turns.state is False  # known up front: nothing to probe (the fake logs no 404s)
    assert llm.scores_turns is False  # its None is no busy model: no longer wait for it
    assert await llm.end_of_turn_probability(ASK) is None
    assert llm.prefill(ASK) is False
    assert llm.turns.state is False and fake.requests == []
