"""Build the providers the configuration names, then load and warm them off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from voice_agent.core.config import V3Config
from voice_agent.core.priority import model_executor
from voice_agent.services.base import LLMService, STTService, TTSService, VADFactory

log = logging.getLogger(__name__)


@dataclass
class Services:
    stt: STTService
    llm: LLMService
    tts: TTSService
    vad: VADFactory
    nice: int = 0
    """Nice steps of the model threads below the event loop (``server.model_threads_nice``)."""

    def close(self) -> None:
        for service in (self.stt, self.llm, self.tts):
            try:
                service.close()
            except Exception:  # closing must never mask the error that led here
                log.exception("closing %s failed", service.name)


def build_services(config: V3Config) -> Services:
    """Instantiate (not load) the providers selected by ``config``; imports stay lazy."""
    from voice_agent.services.stt_whisper import WhisperSTT
    from voice_agent.services.vad_silero import SileroVADFactory

    stt: STTService = WhisperSTT(config)

    if config.ai.provider == "llamacpp":
        from voice_agent.services.llm_llamacpp import LlamaCppLLM

        llm: LLMService = LlamaCppLLM(config)
    else:
        from voice_agent.services.llm_openai import OpenAICompatibleLLM

        llm = OpenAICompatibleLLM(config)

    tts: TTSService
    if config.voice.provider == "piper":
        from voice_agent.services.tts_piper import PiperTTS

        tts = PiperTTS(config)
    else:
        from voice_agent.services.tts_espeak import EspeakTTS

        tts = EspeakTTS(config)

    return Services(stt=stt, llm=llm, tts=tts, vad=SileroVADFactory(config),
                    nice=config.server.model_threads_nice)


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
