"""OpenAI-compatible /audio/speech and /audio/transcriptions adapters (services/openai_audio.py)
against the fake OpenAI server on loopback: rates, the bearer key (or none), a rejected key, a
stream that drops mid-utterance, a slow first result, a WAV answer, and keys kept out of the
config dump and the logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import wave
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers.fake_openai import FakeOpenAI
from voice_agent.core.config import load_config
from voice_agent.core.errors import ProviderError
from voice_agent.services import registry
from voice_agent.services.base import AudioChunk
from voice_agent.services.openai_audio import (PCM_RATE, OpenAICompatibleSTT,
                                               OpenAICompatibleTTS, wav_bytes)

KEY = "sk-audio-secret"
TEXT = "Paris is the capital of France."


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    f = FakeOpenAI().start()
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def _reset(fake: FakeOpenAI) -> None:
    fake.mode, fake.api_key, fake.first_delay_s = "ok", None, 0.0
    fake.drop_after_chunks, fake.speech_format = None, None
    fake.requests.clear()


def tts(fake: FakeOpenAI, **voice: object) -> OpenAICompatibleTTS:
    service = registry.create("tts", load_config(voice={
        "provider": "openai", "base_url": fake.base_url, "timeout_s": 2.0, **voice}))
    assert isinstance(service, OpenAICompatibleTTS)
    return service


def stt(fake: FakeOpenAI, **settings: object) -> OpenAICompatibleSTT:
    service = registry.create("stt", load_config(stt={
        "provider": "openai", "base_url": fake.base_url, **settings}))
    assert isinstance(service, OpenAICompatibleSTT)
    return service


async def collect(service: OpenAICompatibleTTS, text: str = TEXT) -> list[AudioChunk]:
    return [c async for c in service.synthesize(text)]


def samples(text: str) -> int:
    return int(PCM_RATE * 0.005 * len(text))  # the fake: 5 ms of tone per character


async def test_speech_comes_out_as_24_khz_pcm_without_a_key(fake) -> None:
    chunks = await collect(tts(fake))
    assert {c.sample_rate for c in chunks} == {24_000} and len(chunks) > 1
    assert sum(len(c.pcm) for c in chunks) == samples(TEXT)
    (req,) = fake.requests
    assert req["path"] == "/v1/audio/speech" and req["auth"] is None
    assert req["body"] == {"model": "tts-1", "voice": "alloy", "input": TEXT,
                           "response_format": "pcm"}


async def test_model_voice_and_key_are_sent(fake) -> None:
    fake.api_key = KEY
    await collect(tts(fake, api_key=KEY, remote_model="kokoro", voice_id="af_sky", speed=1.2))
    req = fake.requests[-1]
    assert req["auth"] == f"Bearer {KEY}"
    assert (req["body"]["model"], req["body"]["voice"], req["body"]["speed"]) == ("kokoro", "af_sky", 1.2)


async def test_a_wav_answer_is_read_by_its_header(fake) -> None:
    fake.speech_format = "wav"
    chunks = await collect(tts(fake))
    assert {c.sample_rate for c in chunks} == {24_000}
    assert sum(len(c.pcm) for c in chunks) == samples(TEXT)  # the header is not audio


async def test_a_rejected_key_is_a_clear_non_retryable_error(fake, caplog) -> None:
    fake.api_key = KEY
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ProviderError) as err:
            await collect(tts(fake, api_key="sk-wrong-secret"))
        with pytest.raises(ProviderError) as err_stt:
            await stt(fake, api_key="sk-wrong-secret").transcribe(np.zeros(1600, np.float32))
        with pytest.raises(ProviderError, match="rejected"):
            await asyncio.to_thread(tts(fake, api_key="sk-wrong-secret").warmup)
    for e, env in ((err.value, "VOICE_AGENT_VOICE__API_KEY"), (err_stt.value, "VOICE_AGENT_STT__API_KEY")):
        assert not e.retryable and "API key was rejected" in str(e) and env in str(e)
        assert "sk-wrong-secret" not in str(e)
    assert "sk-wrong-secret" not in caplog.text


async def test_a_speech_stream_that_drops_mid_utterance_raises_provider_error(fake) -> None:
    fake.drop_after_chunks = 2
    got = []
    with pytest.raises(ProviderError) as err:
        async for chunk in tts(fake).synthesize(TEXT):
            got.append(chunk)
    assert got and err.value.retryable


async def test_server_errors_are_retryable(fake) -> None:
    fake.mode = "error"
    with pytest.raises(ProviderError) as err:
        await collect(tts(fake))
    assert err.value.retryable and "503" in str(err.value)


async def test_a_slow_first_result_still_arrives(fake) -> None:
    fake.first_delay_s = 0.5
    t0 = time.monotonic()
    chunks = await collect(tts(fake, timeout_s=2.0))
    assert time.monotonic() - t0 >= 0.5 and sum(len(c.pcm) for c in chunks) == samples(TEXT)
    t0 = time.monotonic()
    result = await stt(fake).transcribe(np.zeros(16_000, np.float32))
    assert time.monotonic() - t0 >= 0.5 and result.text == fake.transcript


async def test_too_slow_is_a_timeout(fake) -> None:
    fake.first_delay_s = 1.0
    with pytest.raises(ProviderError, match="no answer within"):
        await collect(tts(fake, timeout_s=0.3))


async def test_closing_the_speech_stream_early_is_quick(fake) -> None:
    stream = tts(fake).synthesize("word " * 400)
    await anext(stream)
    t0 = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - t0 < 0.5


async def test_transcription_sends_a_16_khz_wav_and_reads_the_text(fake) -> None:
    fake.api_key = KEY
    audio = (np.sin(np.arange(8000) / 10) * 0.5).astype(np.float32)
    result = await stt(fake, api_key=KEY, remote_model="whisper-large-v3").transcribe(audio, final=True)
    assert result.text == fake.transcript and result.final
    (req,) = fake.requests
    assert req["path"] == "/v1/audio/transcriptions" and req["auth"] == f"Bearer {KEY}"
    form = req["form"]
    assert (form["model"], form["language"], form["response_format"]) == ("whisper-large-v3", "en", "json")
    with wave.open(io.BytesIO(form["file"]), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16_000, 1, 2, 8000)


def test_stt_defaults_are_its_own_not_the_other_cloud_providers() -> None:
    service = registry.create("stt", load_config(stt={"provider": "openai"}))
    assert (service.base_url, service.model) == ("http://127.0.0.1:8000/v1", "whisper-1")
    service = registry.create("stt", load_config(stt={"provider": "openai",
                                                      "base_url": "wss://stt.example:9000/v1"}))
    assert service.base_url == "https://stt.example:9000/v1"


async def test_groq_root_serves_the_audio_routes_too(fake) -> None:
    service = registry.create("stt", load_config(stt={"provider": "openai",
                                                      "base_url": fake.groq_base_url}))
    assert (await service.transcribe(np.zeros(1600, np.float32))).text == fake.transcript
    assert fake.requests[-1]["path"] == "/openai/v1/audio/transcriptions"


def test_keys_are_redacted_in_the_config_dump() -> None:
    config = load_config(voice={"provider": "openai", "api_key": KEY},
                         stt={"provider": "openai", "api_key": "sk-stt-secret"})
    dump = json.dumps(config.redacted())
    assert KEY not in dump and "sk-stt-secret" not in dump


def test_wav_bytes_clips_and_scales() -> None:
    data = wav_bytes(np.array([0.0, 2.0, -2.0, 0.5], np.float32))
    with wave.open(io.BytesIO(data), "rb") as w:
        pcm = np.frombuffer(w.readframes(4), "<i2")
    assert pcm.tolist() == [0, 32767, -32767, 16383]


async def test_local_fallback_while_the_server_fails(fake) -> None:
    from voice_agent.services.tts_elevenlabs import LocalFallback

    class Local:
        async def synthesize(self, text: str):
            yield AudioChunk(pcm=np.ones(80, dtype=np.int16), sample_rate=8000)

    service = tts(fake, fallback="local")
    assert isinstance(service.fallback, LocalFallback)
    service.fallback.local = Local()  # type: ignore[assignment]  # Piper needs its model
    fake.mode = "error"
    chunks = await collect(service)
    assert [c.sample_rate for c in chunks] == [8000] and service.fallback.status()["active"]
    fake.mode = "ok"
    service.fallback.active_until = 0.0
    chunks = await collect(service)
    assert {c.sample_rate for c in chunks} == {PCM_RATE} and not service.fallback.active
