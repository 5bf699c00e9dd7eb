"""Providers by name: each kind (stt, llm, tts, vad) maps names to a factory taking the config.

The configuration names one provider per kind; :func:`create` builds it from here, so adding a
provider is one :func:`register` call, not another branch in the factory::

    from voice_agent.services import registry
    registry.register("llm", "mine", "mypkg.llm:MyLLM", settings=MyLLMSettings)

then ``[ai] provider = "mine"`` (or ``VOICE_AGENT_AI__PROVIDER=mine``). A factory is a callable
taking the :class:`V3Config` and returning the service (a class is one), or the text
``"module:attribute"`` naming one: that module is imported only when its provider is built, so
importing this registry imports no model library (faster_whisper, xllamacpp, piper,
onnxruntime). The built-in providers are registered that way, below.

Which config field names the provider of each kind (an existing key each, kept as it was):

====  ================  =============================  =======================
kind  field             env                            built-in names
====  ================  =============================  =======================
stt   stt.provider      VOICE_AGENT_STT__PROVIDER      whisper, deepgram, openai
llm   ai.provider       VOICE_AGENT_AI__PROVIDER       llamacpp, openai, groq
tts   voice.provider    VOICE_AGENT_VOICE__PROVIDER    piper, espeak, elevenlabs,
                                                       openai
vad   stt.vad_provider  VOICE_AGENT_STT__VAD_PROVIDER  silero (a new key)
====  ================  =============================  =======================

Validation of the names lives here, not in the config: the config is core, which must not
import services, and a pydantic ``Literal`` there could not know providers registered later.
So the config fields are plain ``str`` (every name accepted before still is), and
:func:`check_config` refuses an unknown name at start-up (``build_services``, and the CLI right
after loading the config), naming the field, its env var and the known names.

Each provider's own config section. The built-in providers keep their settings where they were,
mixed into the shared sections: llamacpp reads ``ai.model``, ``ai.threads``,
``ai.context_size``, ``ai.prompt_cache_mib``, ``ai.prefill_while_speaking``; openai reads
``ai.base_url``, ``ai.api_key``, ``ai.remote_model``, ``ai.timeout_s``; both read
``ai.max_tokens``, ``ai.temperature``, ``ai.system_prompt``. Moving those into sub-sections
(``[ai.openai] base_url``) would rename keys and env vars (``VOICE_AGENT_AI__BASE_URL``), which
are a contract, and keeping both spellings would leave two ways to set one value; so no
built-in got a sub-section. Likewise whisper and silero share ``[stt]``, piper and espeak share
``[voice]``. The cloud providers (docs/providers.md) read the same sections:
``voice.api_key``, ``ai.api_key``, ``stt.api_key`` and their ``base_url``/``remote_model``.
A provider registered with ``settings=`` (a pydantic model) gets a table of its own,
``[providers.<kind>.<name>]`` (env ``VOICE_AGENT_PROVIDERS__<KIND>__<NAME>__<KEY>``),
validated by that model in :func:`check_config` and read back with :func:`settings`. A table
for a provider that registered no model, or for an unknown one, is refused: it would be a typo.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

from pydantic import BaseModel, ValidationError

from voice_agent.core.config import ConfigError, V3Config

Kind: TypeAlias = Literal["stt", "llm", "tts", "vad"]
KINDS: tuple[Kind, ...] = ("stt", "llm", "tts", "vad")
ProviderFactory: TypeAlias = Callable[[V3Config], Any]

# (section, key) of the field that names each kind's provider.
CONFIG_FIELDS: dict[Kind, tuple[str, str]] = {
    "stt": ("stt", "provider"),
    "llm": ("ai", "provider"),
    "tts": ("voice", "provider"),
    "vad": ("stt", "vad_provider"),
}

# Lower case: env var names are case-insensitive, so pydantic-settings lower-cases the keys of a
# [providers.<kind>.<name>] table set from the environment; a name with capitals could not be
# matched to its table.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class _Entry:
    factory: ProviderFactory | str
    settings: type[BaseModel] | None


_registry: dict[Kind, dict[str, _Entry]] = {kind: {} for kind in KINDS}


class UnknownProviderError(ConfigError):
    """The config names a provider nobody registered (a ConfigError: the CLI reports it so)."""


def field_name(kind: Kind) -> str:
    """The dotted config key naming ``kind``'s provider, e.g. ``ai.provider``."""
    return ".".join(CONFIG_FIELDS[_kind(kind)])


def env_name(kind: Kind) -> str:
    """The env var naming ``kind``'s provider, e.g. ``VOICE_AGENT_AI__PROVIDER``."""
    return "VOICE_AGENT_" + "__".join(p.upper() for p in CONFIG_FIELDS[_kind(kind)])


def _kind(kind: str) -> Kind:
    if kind not in CONFIG_FIELDS:
        raise ValueError(f"unknown provider kind {kind!r}; kinds: {', '.join(KINDS)}")
    return cast(Kind, kind)


def register(kind: Kind, name: str, factory: ProviderFactory | str, *,
             settings: type[BaseModel] | None = None, replace: bool = False) -> None:
    """Make ``name`` selectable for ``kind``. ``factory``: a callable taking the config, or
    ``"module:attribute"`` imported when the provider is built. ``settings``: a pydantic model
    for the provider's own ``[providers.<kind>.<name>]`` table. Registering a taken name is an
    error unless ``replace`` (so a plug-in cannot shadow a built-in by accident)."""
    entries = _registry[_kind(kind)]
    if not _NAME.match(name):
        raise ValueError(f"provider name {name!r}: lower-case letters, digits, '_', '.', '-'")
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        if not module or not attr:
            raise ValueError(f"factory {factory!r} for {kind} {name!r}: expected 'module:attr'")
    elif not callable(factory):
        raise TypeError(f"factory for {kind} {name!r} must be callable or 'module:attr'")
    if name in entries and not replace:
        raise ValueError(f"{kind} provider {name!r} is already registered (replace=True)")
    entries[name] = _Entry(factory, settings)


def unregister(kind: Kind, name: str) -> None:
    """Forget ``name`` (tests, and plug-ins that replace themselves); unknown names are fine."""
    _registry[_kind(kind)].pop(name, None)


def names(kind: Kind) -> tuple[str, ...]:
    """The registered names of ``kind``, sorted. Imports nothing."""
    return tuple(sorted(_registry[_kind(kind)]))


def selected(config: V3Config, kind: Kind) -> str:
    """The provider name ``config`` selects for ``kind``."""
    section, key = CONFIG_FIELDS[_kind(kind)]
    return str(getattr(getattr(config, section), key))


def _entry(kind: Kind, name: str) -> _Entry:
    entry = _registry[_kind(kind)].get(name)
    if entry is None:
        known = ", ".join(names(kind)) or "(none)"
        raise UnknownProviderError(
            f"unknown {kind} provider {name!r} (config {field_name(kind)}, env "
            f"{env_name(kind)}); known {kind} providers: {known}")
    return entry


def _resolve(kind: Kind, name: str) -> ProviderFactory:
    factory = _entry(kind, name).factory
    if not isinstance(factory, str):
        return factory
    module, _, attr = factory.partition(":")
    target: Any = importlib.import_module(module)  # the lazy import: only the chosen provider
    for part in attr.split("."):
        target = getattr(target, part)
    return cast(ProviderFactory, target)


def _settings_errors(kind: str, name: str, model: type[BaseModel],
                     table: dict[str, Any]) -> list[str]:
    try:
        model.model_validate(table)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [kind, name, *(str(p) for p in err["loc"])]
            env = "VOICE_AGENT_PROVIDERS__" + "__".join(p.upper() for p in loc)
            lines.append(f"providers.{'.'.join(loc)} (env {env}): {err['msg']} "
                         f"(got {err.get('input')!r})")
        return lines
    return []


def check_config(config: V3Config) -> None:
    """Refuse, in one :class:`ConfigError`, every provider ``config`` names that is not
    registered and every ``[providers.*]`` table that does not fit. Imports no provider."""
    unknown: list[str] = []  # names no provider answers to: UnknownProviderError
    for kind in KINDS:
        try:
            _entry(kind, selected(config, kind))
        except UnknownProviderError as exc:
            unknown.append(str(exc))
    bad: list[str] = []  # tables that do not fit: a plain ConfigError
    for key, tables in config.providers.items():
        if key not in CONFIG_FIELDS:
            bad.append(f"providers.{key}: unknown provider kind; kinds: {', '.join(KINDS)}")
            continue
        kind = cast(Kind, key)
        for name, table in tables.items():
            entry = _registry[kind].get(name)
            if entry is None:
                bad.append(f"providers.{kind}.{name}: no {kind} provider {name!r} is "
                           f"registered; known: {', '.join(names(kind)) or '(none)'}")
            elif entry.settings is None:
                bad.append(f"providers.{kind}.{name}: this provider takes no table of its "
                           f"own (its settings, if any, are in [{CONFIG_FIELDS[kind][0]}])")
            else:
                bad += _settings_errors(kind, name, entry.settings, table)
    problems = unknown + bad
    if not problems:
        return
    cls = ConfigError if bad else UnknownProviderError
    if len(problems) == 1:
        raise cls(problems[0])
    raise cls("invalid provider configuration:\n" + "\n".join(f"  {p}" for p in problems))


def settings(config: V3Config, kind: Kind, name: str | None = None) -> BaseModel:
    """The provider's own ``[providers.<kind>.<name>]`` table (empty: the model's defaults),
    validated by the model it registered; for a provider's factory to read its settings."""
    name = name or selected(config, kind)
    model = _entry(kind, name).settings
    if model is None:
        raise ValueError(f"{kind} provider {name!r} registered no settings model")
    table = config.providers.get(kind, {}).get(name, {})
    errors = _settings_errors(kind, name, model, table)
    if errors:
        raise ConfigError("invalid provider configuration:\n" + "\n".join(f"  {e}" for e in errors))
    return model.model_validate(table)


def create(kind: Kind, config: V3Config) -> Any:
    """Build (not load) the provider ``config`` selects for ``kind``."""
    name = selected(config, kind)
    return _resolve(kind, name)(config)


# The built-in providers, by module path: nothing is imported until one is chosen.
register("stt", "whisper", "voice_agent.services.stt_whisper:WhisperSTT")
register("stt", "deepgram", "voice_agent.services.stt_deepgram:DeepgramSTT")
register("llm", "llamacpp", "voice_agent.services.llm_llamacpp:LlamaCppLLM")
register("llm", "openai", "voice_agent.services.llm_openai:OpenAICompatibleLLM")
register("tts", "piper", "voice_agent.services.tts_piper:PiperTTS")
register("tts", "espeak", "voice_agent.services.tts_espeak:EspeakTTS")
register("vad", "silero", "voice_agent.services.vad_silero:SileroVADFactory")
# Cloud text to speech, Groq and OpenAI-compatible audio servers (docs/providers.md).
register("tts", "elevenlabs", "voice_agent.services.tts_elevenlabs:ElevenLabsTTS")
register("tts", "openai", "voice_agent.services.openai_audio:OpenAICompatibleTTS")
register("llm", "groq", "voice_agent.services.llm_groq:GroqLLM")
register("stt", "openai", "voice_agent.services.openai_audio:OpenAICompatibleSTT")
