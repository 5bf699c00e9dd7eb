"""Build the providers the configuration names, then load and warm them off the event loop.

Which class a name stands for is the registry's business (:mod:`voice_agent.services.registry`);
this module only asks it for one provider of each kind and checks that each is what it claims.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voice_agent.core.activity import Activity
from voice_agent.core.config import V3Config
from voice_agent.core.priority import model_executor
from voice_agent.services import registry
from voice_agent.services.base import LLMService, STTService, TTSService, VADFactory
from voice_agent.services.openmp import set_spin_count

log = logging.getLogger(__name__)


@dataclass
class Services:
    stt: STTService
    llm: LLMService
    tts: TTSService
    vad: VADFactory
    nice: int = 0
    """Nice steps of the model threads below the event loop (``server.model_threads_nice``)."""
    openmp_spin_count: int | None = None
    """Spins of an idle OpenMP thread before it sleeps (``server.openmp_spin_count``)."""
    activity: Activity = field(default_factory=Activity)
    """The sessions in a turn now, across every pipeline these models serve."""

    def close(self) -> None:
        for service in (self.stt, self.llm, self.tts):
            try:
                service.close()
            except Exception:  # closing must never mask the error that led here
                log.exception("closing %s failed", service.name)


_INTERFACES: dict[registry.Kind, type] = {
    "stt": STTService, "llm": LLMService, "tts": TTSService, "vad": VADFactory}


def _build(kind: registry.Kind, config: V3Config) -> Any:
    service = registry.create(kind, config)
    interface = _INTERFACES[kind]
    if not isinstance(service, interface):
        # A plug-in's mistake, caught at start-up rather than as an AttributeError mid-turn.
        raise TypeError(f"{kind} provider {registry.selected(config, kind)!r} built a "
                        f"{type(service).__name__}, not a {interface.__name__}")
    return service


def build_services(config: V3Config) -> Services:
    """Instantiate (not load) the providers selected by ``config``; imports stay lazy.

    Every provider name is checked first, so a typo fails here, before any model is touched,
    with a :class:`~voice_agent.services.registry.UnknownProviderError` naming the field."""
    registry.check_config(config)
    stt: STTService = _build("stt", config)
    llm: LLMService = _build("llm", config)
    tts: TTSService = _build("tts", config)
    vad: VADFactory = _build("vad", config)
    return Services(stt=stt, llm=llm, tts=tts, vad=vad, nice=config.server.model_threads_nice,
                    openmp_spin_count=config.server.openmp_spin_count)


def _load_one(what: str, load: Callable[[], None], warmup: Callable[[], None] | None) -> None:
    t0 = time.perf_counter()
    load()
    t1 = time.perf_counter()
    if warmup is not None:
        warmup()
    t2 = time.perf_counter()
    log.info("%s loaded in %.2f s, warmed up in %.2f s", what, t1 - t0, t2 - t1)


async def load_services(services: Services, *, warmup: bool = True) -> None:
    """Load every provider in a worker thread, one after another.

    Sequential on purpose: on 2 cores parallel loads only fight for the CPU and the disk, and
    the order (VAD, STT, TTS, LLM: small to large) surfaces a missing model quickly. The models
    load in a thread running ``services.nice`` steps below the event loop: the thread pools
    their libraries start inherit that. The VAD runs on the event loop itself: not lowered.
    """
    t0 = time.perf_counter()
    set_spin_count(services.openmp_spin_count)  # before a model's libgomp reads it
    loop = asyncio.get_running_loop()
    vad_load = getattr(services.vad, "load", None)
    if callable(vad_load):
        await asyncio.to_thread(_load_one, f"vad {services.vad.name}", vad_load, None)
    loader = model_executor("model-load", services.nice)
    try:
        for service in (services.stt, services.tts, services.llm):
            await loop.run_in_executor(loader, _load_one, f"{type(service).__name__} "
                                       f"({service.name})", service.load,
                                       service.warmup if warmup else None)
    finally:
        loader.shutdown(wait=False)
    log.info("all services ready in %.2f s", time.perf_counter() - t0)
