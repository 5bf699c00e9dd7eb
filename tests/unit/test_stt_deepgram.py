"""Deepgram live STT against a loopback server speaking Deepgram's WebSocket protocol
(tests/helpers/fake_deepgram.py): what goes over the wire, the results the stream pushes, and
the failures: a rejected key, a stream that drops mid-utterance, a slow first result."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from tests.helpers import fake_deepgram
from tests.helpers.fake_deepgram import FakeDeepgram
from voice_agent.core.config import ConfigError, V3Config, load_config
from voice_agent.core.errors import ProviderError
from voice_agent.core.recovery import ErrorRecoveryManager, RetryPolicy
from voice_agent.services import registry
from voice_agent.services.factory import build_services
from voice_agent.services.stt_deepgram import DeepgramSTT, DeepgramStream, listen_url
from voice_agent.services.stt_stream import SpeechFailure, SpeechResult

KEY = "dg-test-key-5f3c9a"
WORDS = "what is the capital of france"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDeepgram]:
    f = FakeDeepgram(key=KEY).start()
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY)


def config(fake: FakeDeepgram, **stt: object) -> V3Config:
    return load_config(stt={"provider": "deepgram", "api_key": KEY, "base_url": fake.base_url,
                            "timeout_s": 3.0, **stt})


class Pushed(list):
    """What a stream pushed, in order."""

    def __call__(self, result: SpeechResult | SpeechFailure) -> None:
        self.append(result)

    async def until(self, pred: Callable[[Pushed], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred(self):
            assert time.monotonic() < deadline, f"timed out; pushed: {list(self)}"
            await asyncio.sleep(0.01)

    @property
    def final(self) -> SpeechResult | SpeechFailure | None:
        return next((r for r in self if r.final), None)


async def feed(stream: DeepgramStream, seconds: float, *, frame_s: float = 0.032) -> None:
    """Speech-like noise in VAD-sized frames, a little faster than real time."""
    rng = np.random.default_rng(0)
    n = int(seconds / frame_s)
    for _ in range(n):
        stream.feed((rng.standard_normal(int(16000 * frame_s)) * 0.1).astype(np.float32))
        await asyncio.sleep(0.002)


async def until(pred: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def recovery(attempts: int = 3) -> ErrorRecoveryManager:
    return ErrorRecoveryManager(default_policy=RetryPolicy(attempts=attempts, base_delay_s=0.01,
                                                           max_delay_s=0.02))


def final_call(manager: ErrorRecoveryManager):
    async def call(transcribe):  # as the pipeline's VoicePipeline._final_call
        return await manager.call("deepgram", transcribe, timeout_s=5.0)
    return call


# -- the happy path -----------------------------------------------------------------------------

async def test_interims_then_the_final_in_order(fake: FakeDeepgram) -> None:
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 2.0)
    await pushed.until(lambda p: len(p) >= 4)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert all(isinstance(r, SpeechResult) for r in pushed)
    *interims, final = pushed
    assert [r.final for r in pushed] == [False] * len(interims) + [True]
    assert final.text == WORDS and final.start_s == 0.0
    assert final.end_s == pytest.approx(stream.duration_s)
    # Cumulative, as Whisper's: each interim is the utterance so far, from its start.
    for earlier, later in zip(interims, interims[1:]):
        assert later.text.startswith(earlier.text) and later.end_s >= earlier.end_s
    assert all(WORDS.startswith(r.text) and r.start_s == 0.0 for r in interims)
    assert any(r.decisive for r in interims)  # an is_final segment came on its own
    await stream.aclose()
    conn = fake.connections[-1]
    assert conn.control[-2:] == ["Finalize", "CloseStream"]
    assert conn.audio_bytes == 2 * int(stream.duration_s * 16000)


async def test_the_query_and_the_key_go_out_as_deepgram_documents(fake: FakeDeepgram) -> None:
    stt = DeepgramSTT(config(fake, remote_model="nova-2-phonecall"))
    assert await stt.transcribe(np.zeros(8000, np.float32)) is not None
    conn = fake.connections[-1]
    assert conn.auth == f"Token {KEY}"
    assert conn.query["encoding"] == "linear16" and conn.query["sample_rate"] == "16000"
    assert conn.query["channels"] == "1" and conn.query["interim_results"] == "true"
    assert conn.query["model"] == "nova-2-phonecall"
    assert "endpointing" not in conn.query and "utterance_end_ms" not in conn.query
    assert DeepgramSTT(config(fake)).params()["model"] == "nova-3"  # the default


async def test_batch_transcribe_is_one_connection_finalized(fake: FakeDeepgram) -> None:
    stt = DeepgramSTT(config(fake))
    transcript = await stt.transcribe(np.zeros(16000, np.float32), final=True)
    assert transcript.text == WORDS and transcript.final
    assert fake.connections[-1].control == ["Finalize", "CloseStream"]
    assert fake.connections[-1].audio_bytes == 32000


def test_base_url_roots_and_schemes() -> None:
    p = {"model": "nova-3"}
    assert listen_url("https://api.deepgram.com", p) == "wss://api.deepgram.com/v1/listen?model=nova-3"
    assert listen_url("http://127.0.0.1:9/", p) == "ws://127.0.0.1:9/v1/listen?model=nova-3"
    assert listen_url("wss://eu.example/dg", p) == "wss://eu.example/dg/v1/listen?model=nova-3"
    assert load_config().stt.base_url == "wss://api.deepgram.com"
    with pytest.raises(ConfigError, match="stt.base_url"):
        load_config(stt={"base_url": "ftp://api.deepgram.com"})


def test_env_vars_select_and_configure_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_STT__PROVIDER", "deepgram")
    monkeypatch.setenv("VOICE_AGENT_STT__API_KEY", KEY)
    monkeypatch.setenv("VOICE_AGENT_STT__BASE_URL", "https://dg.internal")
    cfg = load_config()
    assert cfg.stt.provider == "deepgram" and cfg.stt.api_key.get_secret_value() == KEY
    assert cfg.stt.model == "base"  # Whisper's model keeps its meaning
    stt = registry.create("stt", cfg)
    assert isinstance(stt, DeepgramSTT) and stt.url.startswith("wss://dg.internal/v1/listen?")


def test_the_registry_imports_no_provider() -> None:
    code = ("import sys, voice_agent.services.registry as r; "
            "assert 'deepgram' in r.names('stt'); "
            "print('voice_agent.services.stt_deepgram' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- keys: missing, rejected, never shown ---------------------------------------------------------

def test_a_missing_key_fails_at_start_up_naming_the_env_var() -> None:
    with pytest.raises(ConfigError, match="VOICE_AGENT_STT__API_KEY"):
        build_services(load_config(stt={"provider": "deepgram"}))
    with pytest.raises(ConfigError, match="VOICE_AGENT_STT__API_KEY"):
        build_services(load_config(stt={"provider": "deepgram", "api_key": "  "}))


async def test_a_rejected_key_is_a_clear_error_that_is_not_retried(fake: FakeDeepgram) -> None:
    stt, pushed = DeepgramSTT(config(fake, api_key="dg-wrong-key")), Pushed()
    stream = stt.create_stream(pushed, final_call=final_call(recovery(attempts=3)))
    await feed(stream, 0.3)
    await pushed.until(lambda p: len(p) >= 1)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert [type(r) for r in pushed] == [SpeechFailure, SpeechFailure]
    error = pushed.final.error
    assert not error.retryable and "HTTP 401" in str(error)
    assert "VOICE_AGENT_STT__API_KEY" in str(error) and "dg-wrong-key" not in str(error)
    assert fake.connections == []  # refused at the handshake, and not tried again
    assert stt.last_error == str(error)
    await stream.aclose()


async def test_the_start_up_check_refuses_a_rejected_key(fake: FakeDeepgram) -> None:
    await asyncio.to_thread(DeepgramSTT(config(fake)).warmup)  # a good key passes
    with pytest.raises(ProviderError, match="refused the API key") as err:
        await asyncio.to_thread(DeepgramSTT(config(fake, api_key="dg-wrong")).warmup)
    assert not err.value.retryable
    # An unreachable service is not a start-up error (retries and the breaker handle it).
    down = load_config(stt={"provider": "deepgram", "api_key": KEY, "timeout_s": 1.0,
                            "base_url": "ws://127.0.0.1:9"})
    await asyncio.to_thread(DeepgramSTT(down).warmup)


async def test_the_key_never_shows_in_the_config_dump_or_the_logs(
        fake: FakeDeepgram, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(fake)
    assert KEY not in json.dumps(cfg.redacted())  # what /v3/config serves
    assert cfg.redacted()["stt"]["api_key"] == "**********"
    assert KEY not in cfg.model_dump_json() and KEY not in repr(cfg)
    caplog.set_level(logging.DEBUG)
    stt, pushed = DeepgramSTT(cfg), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 0.5)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    await stream.aclose()
    wrong = DeepgramSTT(config(fake, api_key="dg-wrong-secret"))
    with pytest.raises(ProviderError):
        await wrong.transcribe(np.zeros(1600, np.float32))
    # The agent's log lines; the fake vendor's own (it logs what it received) are not ours.
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records
                       if r.name != fake_deepgram.LOGGER)
    assert "> Authorization: ***" in logged  # websockets' own header log, masked
    assert KEY not in logged and "dg-wrong-secret" not in logged


# -- failures ---------------------------------------------------------------------------------------

async def test_a_drop_mid_utterance_fails_the_final(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, drop_after_s=0.5, drops=-1)
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed)  # no final_call: one try
    await feed(stream, 1.0)
    await pushed.until(lambda p: any(isinstance(r, SpeechFailure) for r in p))
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    failures = [r for r in pushed if isinstance(r, SpeechFailure)]
    assert [f.final for f in failures] == [False, True]  # the interims, then the turn
    assert "connection to Deepgram lost" in str(failures[-1].error)
    assert failures[-1].error.retryable
    await stream.aclose()


async def test_a_drop_is_retried_with_the_utterance_sent_again(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, drop_after_s=0.5, drops=1)
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed, final_call=final_call(recovery()))
    await feed(stream, 1.0)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert isinstance(pushed.final, SpeechResult) and pushed.final.text == WORDS
    assert len(fake.connections) == 2
    assert fake.connections[1].audio_bytes == 2 * int(stream.duration_s * 16000)
    await stream.aclose()


async def test_a_service_that_keeps_dropping_ends_in_a_failed_final(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, drop_after_s=0.2, drops=-1)
    manager = recovery(attempts=3)
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed, final_call=final_call(manager))
    await feed(stream, 0.6)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert isinstance(pushed.final, SpeechFailure) and pushed.final.final
    assert len(fake.connections) == 3  # the live one, then two retries
    assert manager.status()["deepgram"]["failures"] == 3  # the breaker counted them
    await stream.aclose()


async def test_a_slow_first_result_still_arrives(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, first_result_delay_s=1.0)
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    started = time.monotonic()
    stream = stt.create_stream(pushed, final_call=final_call(recovery()))
    await feed(stream, 1.0)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert isinstance(pushed.final, SpeechResult) and pushed.final.text == WORDS
    assert time.monotonic() - started >= 1.0
    assert len(fake.connections) == 1  # waited for, not retried
    await stream.aclose()


async def test_no_final_in_time_is_a_timeout(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, first_result_delay_s=3.0)
    stt, pushed = DeepgramSTT(config(fake, timeout_s=0.5)), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 0.3)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None, timeout_s=3.0)
    assert isinstance(pushed.final, SpeechFailure)
    assert "no final transcript within 0.5s" in str(pushed.final.error)
    await stream.aclose()


# -- life cycle ------------------------------------------------------------------------------------

async def test_aclose_is_bounded_and_pushes_nothing_after(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, first_result_delay_s=5.0)  # a server busy elsewhere
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 0.5)
    await until(lambda: fake.connections and fake.connections[-1].audio_bytes > 0)
    started = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - started < 1.2
    count = len(pushed)
    stream.feed(np.zeros(512, np.float32))
    stream.finalize(1.0)
    await asyncio.sleep(0.1)
    assert len(pushed) == count


async def test_aclose_sends_close_stream(fake: FakeDeepgram) -> None:
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 0.5)
    await until(lambda: fake.connections and fake.connections[-1].audio_bytes > 0)
    await stream.aclose()
    await until(lambda: fake.connections[-1].closed_by_client)
    assert fake.connections[-1].control[-1] == "CloseStream"


async def test_keepalive_while_no_audio_goes_out(fake: FakeDeepgram) -> None:
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stt.keepalive_s = 0.1
    stream = stt.create_stream(pushed)
    await feed(stream, 0.1)
    await until(lambda: fake.connections and "KeepAlive" in fake.connections[-1].control)
    await stream.aclose()


# -- the provider's end of speech --------------------------------------------------------------------

async def test_provider_endpointing_passes_on_deepgrams_end_of_speech(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, speech_ends_s=0.8)
    stt, pushed, ends = DeepgramSTT(config(fake, provider_endpointing=True)), Pushed(), []
    stream = stt.create_stream(pushed)
    stream.on_end_of_speech = ends.append
    await feed(stream, 1.2)
    await until(lambda: len(ends) >= 2)
    assert ends == [pytest.approx(0.8), pytest.approx(0.8)]  # speech_final, then UtteranceEnd
    conn = fake.connections[-1]
    assert conn.query["endpointing"] == "500" and conn.query["utterance_end_ms"] == "1000"
    assert pushed[-1].text == WORDS
    await stream.aclose()


async def test_without_provider_endpointing_the_vad_decides(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, speech_ends_s=0.8)
    stt, pushed, ends = DeepgramSTT(config(fake)), Pushed(), []
    stream = stt.create_stream(pushed)
    stream.on_end_of_speech = ends.append
    await feed(stream, 1.2)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert ends == [] and "endpointing" not in fake.connections[-1].query
    await stream.aclose()


# -- through the real turn-taking (fake VAD, LLM and TTS; Deepgram over loopback) ---------------------

def pipeline_services(fake: FakeDeepgram, **stt: object):
    from tests.helpers.fakes import FakeLLM, FakeTTS, FakeVADFactory
    from voice_agent.services.factory import Services
    return Services(stt=DeepgramSTT(config(fake, **stt)), llm=FakeLLM(), tts=FakeTTS(),
                    vad=FakeVADFactory())


async def test_a_spoken_question_is_heard_by_deepgram_and_answered(fake: FakeDeepgram) -> None:
    from tests.helpers.fakes import speech
    from tests.helpers.turns import Harness, config as turn_config
    from voice_agent.core.events import TranscriptEvent
    async with Harness(turn_config(), services=pipeline_services(fake)) as h:
        audio = speech("what is the capital of france")  # FakeVAD hears it; Deepgram's words
        for piece in np.array_split(audio, 20):  # as it arrives, so Deepgram's interims do too
            await h.push(piece)
            await asyncio.sleep(0.01)
        await h.pause(700)
        await h.quiet_until_the_turn_ends()  # Deepgram's answer to Finalize, then its score
        replies = await h.answered(1)
        assert h.finals() == [WORDS]
        assert replies[0].text == f"You asked: {WORDS}."
        assert any(not e.final for e in h.of(TranscriptEvent))  # Deepgram's interims shown
        conn = fake.connections[-1]
        assert conn.auth == f"Token {KEY}" and conn.control[-2:] == ["Finalize", "CloseStream"]
        assert conn.audio_bytes >= 2 * len(speech("what is the capital of france"))


async def test_with_provider_endpointing_deepgram_ends_the_turn(fake: FakeDeepgram) -> None:
    """The VAD would wait 5 s of silence here: Deepgram's speech_final ends the turn."""
    from tests.helpers.fakes import silence, speech
    from tests.helpers.turns import Harness, config as turn_config
    from voice_agent.pipeline.turn import TurnState
    audio = speech("what is the capital of france")
    fake.reset(key=KEY, speech_ends_s=len(audio) / 16000)
    cfg = turn_config(end_of_turn_silence_ms=5000, end_of_turn_by_meaning=False,
                      provider_endpointing=True)
    async with Harness(cfg, services=pipeline_services(fake, provider_endpointing=True)) as h:
        for piece in np.array_split(audio, 20):
            await h.push(piece)
            await asyncio.sleep(0.01)
        for _ in range(30):  # up to ~1 s of silence, frame by frame, as a microphone sends it
            await h.push(silence(32))
            await asyncio.sleep(0.01)
            if h.replies():
                break
        replies = await h.answered(1)
        assert replies[0].text == f"You asked: {WORDS}."
        assert h.metrics()[0]["end_of_turn_delay_ms"] < 1500  # not the VAD's 5 s
        await h.say("and of spain")  # the next speech is a new turn, not a resume
        await h.until(lambda: len(h.finals()) == 2 or h.state is TurnState.TRANSCRIBING,
                      "the second turn")


async def test_a_stream_that_drops_is_apologised_for_and_the_next_turn_works(
        fake: FakeDeepgram) -> None:
    from tests.helpers.turns import Harness, config as turn_config
    from voice_agent.pipeline.replies import APOLOGY
    from voice_agent.pipeline.turn import TurnState
    fake.reset(key=KEY, drop_after_s=0.3, drops=-1)
    async with Harness(turn_config(), services=pipeline_services(fake)) as h:
        await h.say("what is the capital of france")
        await h.until(lambda: APOLOGY in h.tts.spoken, "the apology")
        assert h.errors() == ["provider_error"]
        h.sink.play_out()
        await h.until(lambda: h.state is TurnState.LISTENING, "listening again")
        fake.reset(key=KEY, words=["are", "you", "there"])
        before = len(h.replies())  # the apology is no reply of its own
        await h.say("are you there")
        replies = await h.answered(before + 1)
        assert h.finals()[-1] == "are you there" and replies[-1].text == "You asked: are you there."


# -- stt.fallback = "local": Whisper while Deepgram fails (a fake Whisper here: no model) -----------

def with_fake_local(stt: DeepgramSTT):
    from tests.helpers.fakes import FakeSTT
    assert stt.fallback is not None
    stt.fallback.local = FakeSTT()
    return stt.fallback


async def test_the_fallback_transcribes_locally_while_deepgram_is_down(
        fake: FakeDeepgram, caplog: pytest.LogCaptureFixture) -> None:
    from tests.helpers.fakes import speech
    from voice_agent.services.stt_stream import BufferedSTTStream
    from voice_agent.services.stt_whisper import WhisperSTT
    fake.reset(key=KEY, drop_after_s=0.2, drops=-1)
    stt = DeepgramSTT(config(fake, fallback="local"))
    assert isinstance(stt.fallback.local, WhisperSTT)  # built, not loaded, until load()
    fallback = with_fake_local(stt)
    pushed = Pushed()
    stream = stt.create_stream(pushed, final_call=final_call(recovery(attempts=2)))
    assert isinstance(stream, DeepgramStream)
    stream.feed(speech("hello there"))
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert isinstance(pushed.final, SpeechResult) and pushed.final.text == "hello there"
    assert fallback.status()["active"] and "connection to Deepgram lost" in fallback.reason
    assert "transcribing with the local whisper" in caplog.text
    await stream.aclose()
    # While it holds, new utterances go to the local model from their start.
    local = Pushed()
    stream = stt.create_stream(local, final_call=final_call(recovery()))
    assert isinstance(stream, BufferedSTTStream)
    stream.feed(speech("are you there"))
    stream.finalize(stream.duration_s)
    await local.until(lambda p: p.final is not None)
    assert local.final.text == "are you there" and fallback.status()["local_calls"] == 2
    await stream.aclose()
    # After the hold Deepgram gets the next utterance; its success ends the fallback.
    fake.reset(key=KEY)
    fallback.active_until = 0.0
    back = Pushed()
    stream = stt.create_stream(back)
    assert isinstance(stream, DeepgramStream)
    await feed(stream, 0.5)
    stream.finalize(stream.duration_s)
    await back.until(lambda p: p.final is not None)
    assert back.final.text == WORDS and not fallback.status()["active"]
    assert "deepgram is back" in caplog.text
    await stream.aclose()


async def test_the_fallback_takes_over_an_open_circuit_and_a_rejected_key(
        fake: FakeDeepgram) -> None:
    from tests.helpers.fakes import speech
    stt = DeepgramSTT(config(fake, fallback="local", api_key="dg-wrong"))
    fallback = with_fake_local(stt)
    manager = recovery(attempts=1)
    for _ in range(manager._failure_threshold):  # open Deepgram's circuit
        manager.breaker("deepgram").record_failure()
    pushed = Pushed()
    stream = stt.create_stream(pushed, final_call=final_call(manager))
    stream.feed(speech("hello there"))
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert pushed.final.text == "hello there" and fallback.active
    assert "refused the API key" in fallback.reason or "circuit open" in fallback.reason
    assert (await stt.transcribe(speech("are you there"))).text == "are you there"
    await stream.aclose()


async def test_with_the_fallback_a_dropping_deepgram_still_gets_answers(
        fake: FakeDeepgram) -> None:
    from tests.helpers.turns import Harness, config as turn_config
    fake.reset(key=KEY, drop_after_s=0.3, drops=-1)
    services = pipeline_services(fake, fallback="local")
    with_fake_local(services.stt)
    async with Harness(turn_config(), services=services) as h:
        await h.say("what is the capital of france")
        await h.answered(1)
        await h.say("are you there")
        replies = await h.answered(2)
        assert h.finals() == ["what is the capital of france", "are you there"]
        assert replies[-1].text == "You asked: are you there." and h.errors() == []
        assert services.stt.fallback.status()["active"]


def test_health_shows_the_stt_fallback_and_config_hides_the_key(fake: FakeDeepgram) -> None:
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from voice_agent.server.app import create_app
    from voice_agent.services.factory import Services

    cfg = config(fake, fallback="local")
    stt = registry.create("stt", cfg)
    app = create_app(cfg)
    reg = app.state.registry
    reg.services = Services(stt=stt, llm=SimpleNamespace(name="llamacpp"),
                            tts=SimpleNamespace(name="piper"),
                            vad=SimpleNamespace(name="silero"))  # type: ignore[arg-type]
    reg.services_ready = True
    client = TestClient(app, base_url="http://localhost")  # no lifespan: nothing loads
    body = client.get("/v3/health").json()
    assert body["status"] == "ok" and body["models"]["stt"]["name"] == "deepgram"
    assert body["models"]["stt"]["fallback"]["active"] is False
    stt.fallback.enter(ProviderError("deepgram", "connection to Deepgram lost"))
    body = client.get("/v3/health").json()
    assert body["status"] == "degraded"
    assert body["models"]["stt"]["fallback"] | {"active_for_s": 0} == {
        "provider": "whisper", "active": True, "reason": "deepgram: connection to Deepgram lost",
        "active_for_s": 0, "local_calls": 0}
    dump = client.get("/v3/config").text
    assert KEY not in dump and '"api_key":"**********"' in dump.replace(" ", "")


async def test_a_normal_close_before_the_end_of_speech_fails_the_final(fake: FakeDeepgram) -> None:
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 0.2)
    await until(lambda: stream._ws is not None)
    await stream._ws.close()  # as if Deepgram ended the stream (close 1000) mid-utterance
    await pushed.until(lambda p: any(isinstance(r, SpeechFailure) for r in p))
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert isinstance(pushed.final, SpeechFailure)
    assert "closed the stream early" in str(pushed.final.error)
    await stream.aclose()


async def test_a_decisive_interim_is_a_finalize_mid_stream(fake: FakeDeepgram) -> None:
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 0.4)
    stream.request_interim()  # a plain one: Deepgram sends its own, nothing is asked for
    await until(lambda: fake.connections and fake.connections[-1].audio_bytes >= 12000)
    assert "Finalize" not in fake.connections[-1].control
    stream.request_interim(decisive=True)
    stream.request_interim(decisive=True)  # one at a time
    await pushed.until(lambda p: any(r.decisive and r.text == WORDS for r in p))
    conn = fake.connections[-1]
    assert conn.control.count("Finalize") == 1
    decisive = next(r for r in pushed if r.decisive and r.text == WORDS)
    assert not decisive.final and decisive.end_s == pytest.approx(conn.audio_bytes / 32000, abs=0.05)
    # The stream goes on after it; the end of speech's Finalize gives the final.
    await feed(stream, 0.3)
    stream.finalize(stream.duration_s)
    await pushed.until(lambda p: p.final is not None)
    assert pushed.final.text == WORDS
    assert conn.control == ["Finalize", "Finalize", "CloseStream"]
    await stream.aclose()


async def test_a_decisive_interim_with_no_words_is_still_an_answer(fake: FakeDeepgram) -> None:
    fake.reset(key=KEY, words=[])
    stt, pushed = DeepgramSTT(config(fake)), Pushed()
    stream = stt.create_stream(pushed)
    await feed(stream, 0.2)
    await until(lambda: fake.connections and fake.connections[-1].audio_bytes > 0)
    stream.request_interim(decisive=True)
    await pushed.until(lambda p: len(p) >= 1)
    assert pushed[0].text == "" and pushed[0].decisive and not pushed[0].final
    await stream.aclose()
