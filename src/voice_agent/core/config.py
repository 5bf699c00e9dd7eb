"""Typed configuration: defaults < TOML file < environment variables.

Env vars use the prefix ``VOICE_AGENT_`` and ``__`` between nested sections, as pydantic-settings
does: ``VOICE_AGENT_STT__MODEL=tiny.en``. The TOML file is named by ``VOICE_AGENT_CONFIG`` or passed
to :func:`load_config`.

Each section is in a module of its own (config_speech, config_ai, config_pipeline,
config_server); they are all importable from here, as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from voice_agent.core.config_ai import DEFAULT_SYSTEM_PROMPT, AIConfig, ToolsConfig
from voice_agent.core.config_pipeline import DEFAULT_BACKCHANNELS, PipelineConfig
from voice_agent.core.config_section import _Section
from voice_agent.core.config_server import IceServer, ServerConfig, WebRTCConfig
from voice_agent.core.config_speech import STTConfig, VoiceConfig

__all__ = [
    "DEFAULT_BACKCHANNELS", "DEFAULT_SYSTEM_PROMPT", "AIConfig", "ConfigError", "IceServer",
    "PipelineConfig", "RecoveryConfig", "STTConfig", "ServerConfig", "ToolsConfig", "V3Config",
    "VoiceConfig", "WebRTCConfig", "load_config",
]


class RecoveryConfig(_Section):
    """Retries and circuit breakers for every provider."""

    attempts: int = Field(3, ge=1, le=10)
    """Tries per call (or per stream, before its first item) before giving up."""
    base_delay_s: float = Field(0.1, ge=0.0, le=10.0)
    """First backoff; each retry doubles it (with full jitter) up to max_delay_s."""
    max_delay_s: float = Field(1.0, ge=0.0, le=60.0)
    failure_threshold: int = Field(5, ge=1, le=100)
    """Consecutive failures that open a provider's circuit."""
    reset_timeout_s: float = Field(1.0, gt=0.0, le=600.0)
    """How long an open circuit refuses calls before one trial call is let through, so a
    provider that comes back is used again within this time."""


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voice-agent"


class V3Config(BaseSettings):
    """The whole configuration. Unknown keys are refused so that typos are caught."""

    model_config = SettingsConfigDict(
        env_prefix="VOICE_AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    ai: AIConfig = Field(default_factory=AIConfig)
    stt: STTConfig = Field(default_factory=STTConfig)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth_token: SecretStr | None = None
    """Optional bearer token for /ws/v3, /ws/v3/audio and /v3/sessions (VOICE_AGENT_AUTH_TOKEN)."""
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where split model weights are assembled once."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    providers: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    """Settings of providers that have no section above, one table per provider:
    ``[providers.<kind>.<name>]`` (env ``VOICE_AGENT_PROVIDERS__<KIND>__<NAME>__<KEY>``). Each
    table is validated at start-up by the model its provider registered
    (voice_agent.services.registry); the built-in providers keep theirs in the sections above."""

    @field_validator("auth_token")
    @classmethod
    def _empty_token_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value() else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file") or os.environ.get("VOICE_AGENT_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as JSON, secrets replaced by '***'."""
        out = self.model_dump(mode="json")  # SecretStr dumps as '**********'
        # Provider tables are plain data here: which of their values are secrets only their
        # provider's model knows, so every value is hidden (the keys still show what is set).
        out["providers"] = {kind: {name: dict.fromkeys(table, "**********")
                                   for name, table in by_name.items()}
                            for kind, by_name in out["providers"].items()}
        return out


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message says which and why."""


def load_config(path: str | Path | None = None, **overrides: Any) -> V3Config:
    """Build the configuration; raise :class:`ConfigError` with one line per bad value."""
    cls: type[V3Config] = V3Config
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        # A subclass carries the file name, so no module state is touched.
        cls = type("V3ConfigFromFile", (V3Config,), {
            "model_config": SettingsConfigDict(**{**V3Config.model_config, "toml_file": str(path)})
        })
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(root)"
            env = "VOICE_AGENT_" + "__".join(str(p).upper() for p in err["loc"])
            lines.append(f"  {where} (env {env}): {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except Exception as exc:  # a TOML syntax error, for instance
        raise ConfigError(f"cannot read configuration: {exc}") from None
