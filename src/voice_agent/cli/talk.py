"""`voice-agent talk`: one spoken (or typed) question in, a spoken answer out, with stage timings."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import wave
from argparse import Namespace
from pathlib import Path

import numpy as np

from ..core.audio_io import read_audio_16k
from ..core.config import V3Config
from ..core.events import (ErrorEvent, MetricsEvent, PipelineEvent, ResponseEvent,
                           TranscriptEvent)
from ..pipeline.agent import VoicePipeline
from ..pipeline.sink import BufferSink
from ..services.factory import build_services, load_services


def run_talk(config: V3Config, args: Namespace) -> int:
    if not args.audio and not args.text:
        print("error: give an audio file or --text \"...\"", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_talk(config, args))
    except (FileNotFoundError, ValueError) as exc:  # a missing or unreadable input file
        print(f"error: {exc}", file=sys.stderr)
        return 2


async def _talk(config: V3Config, args: Namespace) -> int:
    audio = None
    if args.audio:
        audio = read_audio_16k(Path(args.audio))  # fail on a bad file before loading models
    t0 = time.monotonic()
    services = build_services(config)
    await load_services(services)
    load_s = time.monotonic() - t0

    heard: list[str] = []
    reply: list[str] = []
    metrics: list[dict] = []
    errors: list[str] = []

    async def emit(event: PipelineEvent) -> None:
        if isinstance(event, TranscriptEvent) and event.final:
            heard.append(event.text)
        elif isinstance(event, ResponseEvent) and event.final:
            reply.append(event.text)
        elif isinstance(event, MetricsEvent):
            metrics.append(event.metrics)
        elif isinstance(event, ErrorEvent):
            errors.append(f"{event.code}: {event.message}")

    sink = BufferSink()
    pipeline = VoicePipeline(services, config, emit=emit, sink=sink, session_id="cli")
    await pipeline.start()
    if audio is not None:
        # Trailing silence so the turn detector sees the end of the turn.
        tail = np.zeros(int(16000 * (config.stt.end_of_turn_silence_ms / 1000 + 0.5)), np.float32)
        await pipeline.push_audio(np.concatenate([audio, tail]))
    else:
        await pipeline.push_text(args.text)
    await pipeline.drain()
    await pipeline.close()

    pcm, rate = sink.audio()
    if len(pcm):
        _write_wav(Path(args.output), pcm, rate)
    result = {"heard": " ".join(heard), "answer": " ".join(reply), "output": args.output if len(pcm) else None,
              "audio_s": round(len(pcm) / rate, 2), "models_load_s": round(load_s, 2),
              "metrics": metrics[-1] if metrics else None, "errors": errors}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_result(result)
    if errors:
        return 1
    if not heard:
        print("no speech was heard in the input", file=sys.stderr)
        return 1
    return 0


def _print_result(r: dict) -> None:
    print(f"heard:   {r['heard'] or '(nothing)'}")
    print(f"answer:  {r['answer'] or '(nothing)'}")
    if r["output"]:
        print(f"audio:   {r['output']} ({r['audio_s']} s)")
    print(f"models loaded in {r['models_load_s']} s")
    m = r["metrics"] or {}
    stages = [("end of speech -> end of turn", "end_of_turn_delay_ms"), ("speech to text", "stt_ms"),
              ("LLM first token", "llm_first_token_ms"), ("first sentence", "first_sentence_ms"),
              ("TTS first audio", "tts_first_audio_ms"),
              ("end of speech -> first audio", "end_of_speech_to_first_audio_ms"),
              ("whole reply generated", "reply_total_ms")]
    for label, key in stages:
        if m.get(key) is not None:
            print(f"  {label:<32} {m[key]:>8.0f} ms")
    for e in r["errors"]:
        print(f"error:   {e}", file=sys.stderr)


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
