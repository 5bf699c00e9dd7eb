"""ElevenLabs streaming TTS against a loopback server speaking its documented protocol
(tests/helpers/fake_elevenlabs.py): the audio, the key's header, a rejected key, a stream that
drops mid-utterance, a slow first result, closing early, the HTTP fallback, and the key kept out
of /v3/config and the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers.fake_elevenlabs import MS_PER_CHAR, FakeElevenLabs
from voice_agent.core.config import ConfigError, load_config
from voice_agent.core.errors import ProviderError
from voice_agent.core.recovery import ErrorRecoveryManager, RetryPolicy
from voice_agent.services import registry
from voice_agent.services.base import AudioChunk, TTSService
from voice_agent.services.tts_elevenlabs import ElevenLabsTTS, LocalFallback, roots

KEY = "xi-test-key"
TEXT = "Hello there. How are you today?"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeElevenLabs]:
    f = FakeElevenLabs(api_key=KEY).start()
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def _reset(fake: FakeElevenLabs) -> None:
    fake.reset()


def make(fake: FakeElevenLabs, **voice: object) -> ElevenLabsTTS:
    settings = {"provider": "elevenlabs", "api_key": KEY, "base_url": fake.base_url,
                "voice_id": "voice123", "timeout_s": 2.0, **voice}
    tts = registry.create("tts", load_config(voice=settings))
    assert isinstance(tts, ElevenLabsTTS)
    return tts


async def collect(tts: TTSService, text: str = TEXT) -> list[AudioChunk]:
    return [c async for c in tts.synthesize(text)]


def expected_samples(text: str, rate: int) -> int:
    # The fake makes a tone of MS_PER_CHAR per character for each flushed sentence.
    from voice_agent.services.tts_espeak import split_sentences
    return sum(int(rate * len(s) * MS_PER_CHAR / 1000) for s in split_sentences(text))


async def test_audio_comes_out_at_the_pcm_rate_with_the_documented_messages(fake) -> None:
    tts = make(fake)
    chunks = await collect(tts)
    assert tts.sample_rate == 16_000 and all(c.sample_rate == 16_000 for c in chunks)
    assert all(c.pcm.dtype == np.int16 for c in chunks) and len(chunks) > 2
    assert sum(len(c.pcm) for c in chunks) == expected_samples(TEXT, 16_000)
    (sock,) = fake.sockets
    assert sock["voice_id"] == "voice123"
    assert sock["query"] == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000"}
    assert sock["headers"]["xi-api-key"] == KEY  # the vendor's header
    messages = sock["messages"]
    assert messages[0] == {"text": " "}  # opens the input; no key in the body
    assert messages[1:] == [{"text": "Hello there. ", "flush": True},
                            {"text": "How are you today? ", "flush": True}, {"text": ""}]


async def test_another_pcm_rate_and_model(fake) -> None:
    tts = make(fake, output_format="pcm_24000", remote_model="eleven_turbo_v2_5")
    chunks = await collect(tts, "Hi.")
    assert {c.sample_rate for c in chunks} == {24_000}
    assert sum(len(c.pcm) for c in chunks) == expected_samples("Hi.", 24_000)
    assert fake.sockets[0]["query"]["model_id"] == "eleven_turbo_v2_5"


def test_only_pcm_formats_and_cloud_roots_are_accepted() -> None:
    with pytest.raises(ConfigError, match="output_format"):
        load_config(voice={"output_format": "mp3_44100_128"})
    with pytest.raises(ConfigError, match="VOICE_AGENT_VOICE__BASE_URL"):
        load_config(voice={"base_url": "ftp://api.elevenlabs.io"})
    assert roots("https://api.elevenlabs.io/") == ("wss://api.elevenlabs.io", "https://api.elevenlabs.io")
    assert roots("ws://127.0.0.1:9") == ("ws://127.0.0.1:9", "http://127.0.0.1:9")


def test_a_missing_key_fails_at_start_up_naming_the_env_var(monkeypatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_VOICE__PROVIDER", "elevenlabs")
    config = load_config()
    with pytest.raises(ConfigError, match="VOICE_AGENT_VOICE__API_KEY"):
        registry.create("tts", config)


def test_the_env_vars_of_the_issue(monkeypatch, fake) -> None:
    monkeypatch.setenv("VOICE_AGENT_VOICE__PROVIDER", "elevenlabs")
    monkeypatch.setenv("VOICE_AGENT_VOICE__API_KEY", KEY)
    monkeypatch.setenv("VOICE_AGENT_VOICE__BASE_URL", fake.http_url)
    monkeypatch.setenv("VOICE_AGENT_VOICE__VOICE_ID", "v9")
    tts = registry.create("tts", load_config())
    assert (tts.ws_root, tts.voice_id) == (fake.base_url, "v9")


@pytest.mark.parametrize("reject", ["close", "handshake"])
async def test_a_rejected_key_is_a_clear_non_retryable_error(fake, reject: str) -> None:
    fake.reject = reject  # close 1008 "Invalid API key" after the first message / 401 upgrade
    with pytest.raises(ProviderError) as err:
        await collect(make(fake))
    assert not err.value.retryable
    assert "API key was rejected" in str(err.value) and "VOICE_AGENT_VOICE__API_KEY" in str(err.value)
    assert KEY not in str(err.value)
    # The recovery manager believes it: one attempt, no retries.
    recovery = ErrorRecoveryManager(default_policy=RetryPolicy(attempts=3, base_delay_s=0))
    tts = make(fake)
    with pytest.raises(ProviderError):
        async for _ in recovery.guard_stream(tts.name, lambda: tts.synthesize(TEXT)):
            pass
    assert len(fake.sockets) == 2


async def test_a_wrong_key_is_rejected_at_start_up(fake) -> None:
    tts = make(fake, api_key="xi-wrong")
    with pytest.raises(ProviderError, match="API key was rejected") as err:
        await asyncio.to_thread(tts.warmup)
    assert "xi-wrong" not in str(err.value)
    await asyncio.to_thread(make(fake).warmup)  # the right key passes the check
    assert fake.http_requests[-1]["path"] == "/v1/voices/voice123"


async def test_a_stream_that_drops_mid_utterance_raises_a_retryable_provider_error(fake) -> None:
    fake.drop_after_chunks = 2
    got: list[AudioChunk] = []
    with pytest.raises(ProviderError) as err:
        async for chunk in make(fake).synthesize(TEXT):
            got.append(chunk)
    assert len(got) == 2 and err.value.retryable
    assert "dropped before isFinal, after 2 audio chunks" in str(err.value)


async def test_a_slow_first_result_still_arrives(fake) -> None:
    fake.first_audio_delay_s = 0.6
    t0 = time.monotonic()
    chunks = await collect(make(fake, timeout_s=2.0))
    assert time.monotonic() - t0 >= 0.6
    assert sum(len(c.pcm) for c in chunks) == expected_samples(TEXT, 16_000)


async def test_no_audio_within_the_timeout_is_a_timeout(fake) -> None:
    fake.first_audio_delay_s = 1.5
    with pytest.raises(ProviderError, match="no audio within"):
        await collect(make(fake, timeout_s=0.3))


async def test_closing_the_generator_closes_the_socket_quickly(fake) -> None:
    fake.chunk_interval_s = 0.05  # a long utterance still being sent
    stream = make(fake).synthesize("word " * 200 + ".")
    await anext(stream)
    t0 = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - t0 < 0.6  # CLOSE_TIMEOUT_S (0.5 s) at most, then a reset
    for _ in range(50):  # the server sees the close
        if fake.sockets[0]["closed_at"] is not None:
            break
        await asyncio.sleep(0.01)
    assert fake.sockets[0]["closed_at"] is not None


async def test_without_websocket_it_streams_over_http(fake, caplog) -> None:
    fake.websocket = False  # the upgrade answered 404, as by a proxy
    tts = make(fake, output_format="pcm_22050")
    with caplog.at_level(logging.WARNING):
        chunks = await collect(tts)
    assert tts.use_http and "streaming over HTTP" in caplog.text
    assert {c.sample_rate for c in chunks} == {22_050}
    # The HTTP body is one tone for the whole text; odd-sized pieces are joined correctly.
    assert sum(len(c.pcm) for c in chunks) == int(22_050 * len(TEXT) * MS_PER_CHAR / 1000)
    (req,) = fake.http_requests
    assert req["path"] == "/v1/text-to-speech/voice123/stream"
    assert req["query"] == {"output_format": "pcm_22050"}
    assert req["headers"]["xi-api-key"] == KEY
    assert req["body"] == {"text": TEXT, "model_id": "eleven_flash_v2_5"}
    await collect(tts, "Again.")  # later calls go straight to HTTP
    assert len(fake.sockets) == 1 and len(fake.http_requests) == 2


async def test_http_rejected_key(fake) -> None:
    fake.websocket = False
    with pytest.raises(ProviderError, match="invalid_api_key") as err:
        await collect(make(fake, api_key="xi-wrong"))
    assert not err.value.retryable


async def test_the_key_is_redacted_in_the_config_dump_and_never_logged(fake, caplog) -> None:
    config = load_config(voice={"provider": "elevenlabs", "api_key": KEY,
                                "base_url": fake.base_url})
    assert KEY not in json.dumps(config.redacted())
    assert config.redacted()["voice"]["api_key"] == "**********"
    with caplog.at_level(logging.DEBUG):
        fake.websocket = False
        await collect(make(fake))  # the HTTP path logs its switch
        fake.websocket, fake.reject = True, "close"
        with pytest.raises(ProviderError):
            await collect(make(fake, api_key=KEY))
        fake.reject = None
        with pytest.raises(ProviderError):
            await asyncio.to_thread(make(fake, api_key="xi-other-secret").warmup)
        with pytest.raises(ProviderError):
            await collect(make(fake, api_key="xi-other-secret"))
    assert "xi-api-key: ***" in caplog.text  # websockets' debug log of the handshake, masked
    assert KEY not in caplog.text and "xi-other-secret" not in caplog.text


class _Local(TTSService):
    name = "local"
    sample_rate = 8000

    def load(self) -> None:
        pass

    async def synthesize(self, text: str):
        yield AudioChunk(pcm=np.ones(80, dtype=np.int16), sample_rate=8000)


async def test_local_fallback_speaks_while_the_cloud_is_down_and_gives_back(fake, caplog) -> None:
    tts = make(fake, fallback="local")
    assert isinstance(tts.fallback, LocalFallback)
    tts.fallback.local = _Local()  # Piper itself needs its model; the switch is tested here
    fake.reject = "close"
    with caplog.at_level(logging.WARNING):
        chunks = await collect(tts)
    assert [c.sample_rate for c in chunks] == [8000]
    status = tts.fallback.status()
    assert status["active"] and status["provider"] == "piper" and "rejected" in status["reason"]
    assert "speaking with the local piper" in caplog.text
    sockets = len(fake.sockets)
    await collect(tts)  # within the hold time: no cloud call at all
    assert len(fake.sockets) == sockets and tts.fallback.calls == 2
    fake.reject = None
    tts.fallback.active_until = 0.0  # the hold is over: the cloud is tried again
    chunks = await collect(tts)
    assert {c.sample_rate for c in chunks} == {16_000} and not tts.fallback.status()["active"]
    assert "is back" in caplog.text


async def test_a_failure_after_audio_went_out_is_not_hidden_by_the_fallback(fake) -> None:
    tts = make(fake, fallback="local")
    tts.fallback.local = _Local()
    fake.drop_after_chunks = 1
    with pytest.raises(ProviderError, match="dropped"):
        await collect(tts)


def test_health_shows_the_fallback_and_config_hides_the_key(fake) -> None:
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from voice_agent.server.app import create_app
    from voice_agent.services.factory import Services

    config = load_config(voice={"provider": "elevenlabs", "api_key": KEY,
                                "base_url": fake.base_url, "fallback": "local"})
    tts = registry.create("tts", config)
    app = create_app(config)
    reg = app.state.registry
    reg.services = Services(stt=SimpleNamespace(name="whisper"), llm=SimpleNamespace(name="llamacpp"),
                            tts=tts, vad=SimpleNamespace(name="silero"))  # type: ignore[arg-type]
    reg.services_ready = True
    client = TestClient(app, base_url="http://localhost")  # no lifespan: nothing loads
    body = client.get("/v3/health").json()
    assert body["status"] == "ok" and body["models"]["tts"]["name"] == "elevenlabs"
    assert body["models"]["tts"]["fallback"]["active"] is False
    assert "fallback" not in body["models"]["llm"]
    tts.fallback.enter(ProviderError("elevenlabs", "the API key was rejected"))
    body = client.get("/v3/health").json()
    assert body["status"] == "degraded"
    assert body["models"]["tts"]["fallback"] | {"active_for_s": 0} == {
        "provider": "piper", "active": True, "reason": "elevenlabs: the API key was rejected",
        "active_for_s": 0, "local_calls": 0}
    dump = client.get("/v3/config").text
    assert KEY not in dump and '"api_key":"**********"' in dump.replace(" ", "")


class _Recorder(list):
    async def __call__(self, event: object) -> None:
        self.append(event)


async def _typed_turn(fake: FakeElevenLabs, text: str, **voice: object):
    """One typed turn through the real pipeline: fake LLM (tests/helpers/fakes.py), ElevenLabs
    TTS against the loopback fake, a buffer sink."""
    from tests.helpers.fakes import fake_services
    from voice_agent.core.events import ErrorEvent
    from voice_agent.pipeline.agent import VoicePipeline
    from voice_agent.pipeline.sink import BufferSink

    config = load_config(voice={"provider": "elevenlabs", "api_key": KEY, "base_url": fake.base_url,
                                "timeout_s": 2.0, **voice},
                         recovery={"attempts": 2, "base_delay_s": 0.0, "max_delay_s": 0.0})
    services = fake_services()
    services.tts = registry.create("tts", config)
    rec, sink = _Recorder(), BufferSink()
    pipeline = VoicePipeline(services, config, emit=rec, sink=sink)
    try:
        await pipeline.push_text(text)
        await pipeline.drain()
    finally:
        await pipeline.close()
    return sink, [e for e in rec if isinstance(e, ErrorEvent)], pipeline


async def test_a_reply_is_spoken_through_elevenlabs_in_the_pipeline(fake) -> None:
    sink, errors, _ = await _typed_turn(fake, "what is the capital of france")
    assert errors == []
    audio = sink.audio()
    assert len(audio[0]) > 1000 and fake.sockets  # the reply's audio came from the fake
    spoken = " ".join(m["text"] for s in fake.sockets for m in s["messages"][1:-1]).strip()
    assert spoken.startswith("You asked:")


async def test_a_drop_before_the_first_audio_is_retried_by_the_pipeline(fake) -> None:
    fake.drop_after_chunks = 0  # every socket drops before its first audio...
    calls = 0
    original = fake._send_audio

    async def recover_after_the_first(ws, record, text, rate):  # ...once
        nonlocal calls
        calls += 1
        if calls > 1:
            fake.drop_after_chunks = None
        return await original(ws, record, text, rate)
    fake._send_audio = recover_after_the_first  # type: ignore[method-assign]
    try:
        sink, errors, pipeline = await _typed_turn(fake, "hello")
    finally:
        fake._send_audio = original  # type: ignore[method-assign]
    assert errors == [] and len(sink.audio()[0]) > 0
    assert pipeline.recovery.breaker("elevenlabs").total_failures == 1


async def test_a_rejected_key_in_a_turn_is_an_error_event_not_retried(fake) -> None:
    fake.reject = "close"
    sink, errors, pipeline = await _typed_turn(fake, "hello")
    assert len(errors) == 1 and "API key was rejected" in errors[0].message
    assert KEY not in errors[0].message
    # One socket for the reply (not retried), one for the spoken apology (which fails too).
    assert pipeline.recovery.breaker("elevenlabs").total_failures == 1


async def test_a_normal_close_after_the_audio_without_is_final_is_complete(fake) -> None:
    fake.send_final = False
    chunks = await collect(make(fake))
    assert sum(len(c.pcm) for c in chunks) == expected_samples(TEXT, 16_000)


async def test_a_normal_close_without_any_audio_is_an_error(fake) -> None:
    fake.close_after_first_message = True
    with pytest.raises(ProviderError, match="closed 1000") as err:
        await collect(make(fake))
    assert err.value.retryable
