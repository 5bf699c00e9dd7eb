"""Configuration: defaults < TOML file < environment, clear errors, redacted secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from voice_agent.core.config import DEFAULT_SYSTEM_PROMPT, ConfigError, V3Config, load_config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's own VOICE_AGENT_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.startswith("VOICE_AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voice-agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    cfg = load_config()
    assert isinstance(cfg, V3Config)
    assert cfg.stt.model == "base"
    assert cfg.ai.provider == "llamacpp"
    assert cfg.ai.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert cfg.voice.provider == "piper"
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8000
    assert cfg.webrtc.ice_servers == []  # nothing leaves the machine by default
    assert cfg.auth_token is None and cfg.ai.api_key is None
    assert cfg.log_level == "INFO"


def test_cache_dir_follows_xdg(tmp_path: Path) -> None:
    assert load_config().cache_dir == tmp_path / "cache" / "voice-agent"


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
log_level = "DEBUG"
[stt]
model = "tiny.en"
end_of_turn_silence_ms = 700
[server]
port = 9001
cors_origins = ["http://localhost:3000"]
[[webrtc.ice_servers]]
urls = ["stun:stun.example.org:3478"]
""",
    )
    cfg = load_config(path)
    assert cfg.log_level == "DEBUG"
    assert cfg.stt.model == "tiny.en"
    assert cfg.stt.end_of_turn_silence_ms == 700
    assert cfg.stt.beam_size == 1  # untouched keys keep their defaults
    assert cfg.server.port == 9001
    assert cfg.server.cors_origins == ["http://localhost:3000"]
    assert cfg.webrtc.ice_servers[0].urls == ["stun:stun.example.org:3478"]


def test_toml_file_named_by_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, '[stt]\nmodel = "tiny.en"\n')
    monkeypatch.setenv("VOICE_AGENT_CONFIG", str(path))
    assert load_config().stt.model == "tiny.en"


def test_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_STT__MODEL", "tiny.en")
    monkeypatch.setenv("VOICE_AGENT_AI__MAX_TOKENS", "64")
    monkeypatch.setenv("VOICE_AGENT_SERVER__PORT", "8123")
    monkeypatch.setenv("VOICE_AGENT_LOG_LEVEL", "WARNING")
    cfg = load_config()
    assert cfg.stt.model == "tiny.en"
    assert cfg.ai.max_tokens == 64
    assert cfg.server.port == 8123
    assert cfg.log_level == "WARNING"


def test_env_var_holding_json_for_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_SERVER__CORS_ORIGINS", '["https://a.example"]')
    assert load_config().server.cors_origins == ["https://a.example"]


def test_precedence_defaults_then_toml_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(
        tmp_path,
        '[stt]\nmodel = "tiny.en"\nbeam_size = 3\n[ai]\nmax_tokens = 50\n',
    )
    monkeypatch.setenv("VOICE_AGENT_STT__BEAM_SIZE", "5")
    cfg = load_config(path)
    assert cfg.stt.beam_size == 5  # env beats TOML
    assert cfg.stt.model == "tiny.en"  # TOML beats default
    assert cfg.ai.max_tokens == 50
    assert cfg.ai.temperature == 0.2  # default where neither says anything


def test_explicit_overrides_beat_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(tmp_path, 'log_level = "DEBUG"\n')
    monkeypatch.setenv("VOICE_AGENT_LOG_LEVEL", "WARNING")
    assert load_config(path, log_level="ERROR").log_level == "ERROR"


def test_bad_env_value_names_field_and_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_STT__BEAM_SIZE", "lots")
    with pytest.raises(ConfigError) as info:
        load_config()
    msg = str(info.value)
    assert "stt.beam_size" in msg
    assert "VOICE_AGENT_STT__BEAM_SIZE" in msg
    assert "'lots'" in msg


def test_out_of_range_toml_value_is_reported(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 70000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "server.port" in str(info.value)
    assert "VOICE_AGENT_SERVER__PORT" in str(info.value)


def test_every_bad_value_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_STT__MODEL", "huge")
    monkeypatch.setenv("VOICE_AGENT_AI__TEMPERATURE", "9")
    with pytest.raises(ConfigError) as info:
        load_config()
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert any("stt.model" in line for line in lines[1:])
    assert any("ai.temperature" in line for line in lines[1:])


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config(path)


def test_unknown_nested_key_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[stt]\nmodle = 'tiny.en'\n")
    with pytest.raises(ConfigError, match="stt.modle"):
        load_config(path)


def test_unknown_nested_env_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_STT__MODLE", "tiny.en")
    with pytest.raises(ConfigError, match="VOICE_AGENT_STT__MODLE"):
        load_config()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[stt\nmodel = \n")
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(path)


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[ai]\nprovider = "openai"\napi_key = "sk-very-secret"\n')
    monkeypatch.setenv("VOICE_AGENT_AUTH_TOKEN", "token-very-secret")
    cfg = load_config(path)
    # The real values stay usable in code...
    assert cfg.auth_token is not None
    assert cfg.auth_token.get_secret_value() == "token-very-secret"
    assert cfg.ai.api_key is not None
    assert cfg.ai.api_key.get_secret_value() == "sk-very-secret"
    # ...but never show in the effective configuration, its repr or its JSON.
    red = cfg.redacted()
    dumped = json.dumps(red)
    assert "very-secret" not in dumped
    assert "very-secret" not in repr(cfg)
    assert red["auth_token"] and set(red["auth_token"]) == {"*"}
    assert red["ai"]["api_key"] and set(red["ai"]["api_key"]) == {"*"}
    assert red["stt"]["model"] == "base"  # non-secrets are shown as they are


def test_empty_auth_token_means_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_AUTH_TOKEN", "")
    cfg = load_config()
    assert cfg.auth_token is None
    assert cfg.redacted()["auth_token"] is None


def test_config_objects_are_independent(tmp_path: Path) -> None:
    # Loading from a file must not change how later loads without a file behave.
    path = write_toml(tmp_path, '[stt]\nmodel = "tiny.en"\n')
    assert load_config(path).stt.model == "tiny.en"
    assert load_config().stt.model == "base"


def test_advertised_address_must_be_an_ip_address(monkeypatch):
    monkeypatch.setenv("VOICE_AGENT_WEBRTC__ADVERTISED_ADDRESS", " 203.0.113.7 ")
    assert V3Config().webrtc.advertised_address == "203.0.113.7"
    monkeypatch.setenv("VOICE_AGENT_WEBRTC__ADVERTISED_ADDRESS", "voice.example.com")
    with pytest.raises(ValidationError, match="must be an IP address"):
        V3Config()
