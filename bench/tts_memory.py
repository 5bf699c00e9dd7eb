"""Piper's memory over many sentences of varied length, with and without onnxruntime's arena.

    python -m bench.tts_memory            # the server's setup: no arena, 2 malloc arenas, trim
    python -m bench.tts_memory --arena    # onnxruntime's default arena, for comparison

Prints RSS and glibc's heap (in use / free) every 20 sentences, and RSS after a malloc_trim (what
the server does after each session). Used for docs/memory.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from voice_agent.core.config import V3Config
from voice_agent.server.memory import limit_arenas, memory_report, release_free_memory
from voice_agent.services.tts_piper import PiperTTS

WORDS = ("the capital of france is paris and it is a lovely city with many bridges over the "
         "seine river people like to walk there").split()


async def probe(sentences: int, arena: bool) -> None:
    limit_arenas(V3Config().server.malloc_arena_max)
    tts = PiperTTS(V3Config())
    tts.load()
    if arena:  # onnxruntime's defaults, as PiperVoice.load makes the session
        from piper import PiperVoice

        assert tts.path is not None
        tts._voice = PiperVoice.load(tts.path, config_path=tts.path.with_name(tts.path.name + ".json"))
    tts.warmup()
    rng = random.Random(1)
    print(f"arena={'on' if arena else 'off'} start: {memory_report()}")
    for i in range(sentences):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))).capitalize() + "."
        async for _ in tts.synthesize(text):
            pass
        if (i + 1) % 20 == 0:
            before = memory_report()
            release_free_memory()
            print(f"{i + 1} sentences: {before}; RSS after trim {memory_report()['rss_mb']} MB",
                  flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=100)
    p.add_argument("--arena", action="store_true", help="onnxruntime's memory arena on")
    args = p.parse_args()
    asyncio.run(probe(args.sentences, args.arena))


if __name__ == "__main__":
    main()
