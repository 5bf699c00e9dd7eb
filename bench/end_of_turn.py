"""How well two end-of-turn signals tell a finished question from one the speaker is still in:
``python -m bench.end_of_turn`` (markdown on stdout; docs/end_of_turn.md holds one run).

Signals, on the same items: Smart Turn v3.2 on the sound (the last 8 s up to a pause of
``--pauses`` seconds), and the LLM's probability that the sentence ends after the words
(``LlamaCppLLM.end_of_turn_probability``: trailing punctuation dropped, then ``?``/``.``/``!``
or ``<|im_end|>`` next), once on the words said and once on what Whisper heard at the first
pause (what the turn engine would have); also ``<|im_end|>`` alone after Whisper's text with
its punctuation (``keep_punctuation``). Then their combinations at a few thresholds.
20 complete questions and 20 unfinished ones (cut before their last words, or a lead-in such
as "I want to know"), in the voices of ``bench.voices`` (espeak-ng and flite by default;
``--voices piper-joe piper-joe-fast`` for Piper): synthetic prosody, which may fool Smart Turn
more than real speech would (docs/end_of_turn.md).

"cut off" counts unfinished items called done (the agent would talk over the user); "waited"
counts complete ones not called done (the agent waits for the longer timeout instead).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voice_agent.core.config import V3Config
from voice_agent.core.messages import ChatMessage
from voice_agent.services.llm_llamacpp import LlamaCppLLM
from voice_agent.services.smart_turn import SmartTurn
from voice_agent.services.stt_whisper import WhisperSTT

from .voices import Voice, select_voices

COMPLETE: tuple[str, ...] = (
    "What is the capital of France?", "How many legs does a spider have?",
    "What is the largest city in Canada?", "Can you tell me a joke?",
    "I want to know how tall Mount Everest is.", "Why is the sky blue?",
    "What time is it in Tokyo?", "How do I boil an egg?", "Who wrote Romeo and Juliet?",
    "What is two plus two?", "Tell me a fun fact about octopuses.",
    "How far away is the moon?", "What should I cook for dinner tonight?",
    "Is it going to rain tomorrow?", "Recommend a good science fiction book.",
    "What do bees eat?", "How do you say hello in Spanish?",
    "Which planet is closest to the sun?", "Thank you, that was helpful.",
    "Can you explain how a rainbow forms?",
)
UNFINISHED: tuple[str, ...] = (
    "I want to know", "Can you tell me", "What is the largest city in",
    "What is the capital of", "How many legs does a", "Tell me a fun fact about",
    "I was wondering if you could", "Who wrote", "How do I",
    "What is the difference between", "Can you recommend a good",
    "My favourite food is pizza and", "I need to buy a present for my", "What is two plus",
    "Why is the sky blue and", "So I was thinking about", "Is it going to rain in",
    "How far away is the", "Which planet is closest to", "Could you explain how",
)
DEFAULT_VOICES = ("espeak-us", "espeak-gb", "espeak-us-f3", "flite-kal", "flite-slt")
RATE = 16000
LEAD_S = 0.3


@dataclass
class Item:
    voice: str
    text: str
    complete: bool
    heard: str = ""
    smart_turn: dict[float, float] = field(default_factory=dict)
    smart_turn_ms: float = 0.0
    features_ms: float = 0.0
    llm_text: float = 0.0
    """The LLM on the question's own words (its default: trailing punctuation dropped)."""
    llm_heard: float = 0.0
    """The same on what Whisper heard."""
    im_end_heard: float = 0.0
    """``<|im_end|>`` alone after Whisper's text as written (``keep_punctuation``)."""
    llm_ms: float = 0.0


def speak(voice: Voice, text: str, folder: Path) -> np.ndarray:
    """``text`` in ``voice``, 16 kHz float, without the engine's own leading/trailing
    silence (so the pauses are exact); sox's dither is off, so a run is repeatable."""
    raw, wav = folder / "raw.wav", folder / "16k.wav"
    voice.render(text, raw)
    subprocess.run(["sox", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)],
                   check=True, capture_output=True, timeout=60)
    with wave.open(str(wav), "rb") as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio


def with_pause(speech: np.ndarray, pause_s: float) -> np.ndarray:
    return np.concatenate([np.zeros(int(LEAD_S * RATE), np.float32), speech,
                           np.zeros(int(pause_s * RATE), np.float32)])


def score(items: list[Item], done: Callable[[Item], bool]) -> tuple[float, int, int]:
    """Accuracy, unfinished items called done (cut off), complete ones not (waited)."""
    cut = sum(1 for i in items if not i.complete and done(i))
    waited = sum(1 for i in items if i.complete and not done(i))
    return 1 - (cut + waited) / len(items), cut, waited


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                  .splitlines() if line.startswith("model name")), platform.processor())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {model}, load average {load:.1f} at the start"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


async def measure(args: argparse.Namespace) -> tuple[list[Item], list[float], list[float]]:
    """The items, and the LLM's ms per call on the questions' text: cold, then cached."""
    config = V3Config(ai={"threads": args.threads}, stt={"threads": args.threads})
    system = ChatMessage("system", config.ai.system_prompt)
    smart = SmartTurn(threads=1)
    smart.load()
    stt, llm = WhisperSTT(config), LlamaCppLLM(config)
    stt.load()
    stt.warmup()
    llm.load()
    llm.warmup()
    questions = [(t, True) for t in COMPLETE[:args.per_class]] + \
        [(t, False) for t in UNFINISHED[:args.per_class]]

    def llm_p(text: str, keep_punctuation: bool = False) -> tuple[float, float]:
        t0 = time.perf_counter()
        p = llm.end_of_turn_probability([system, ChatMessage("user", text)],
                                        keep_punctuation=keep_punctuation)
        assert p is not None, "the model's template is not ChatML"
        return p, (time.perf_counter() - t0) * 1000

    on_text: dict[str, float] = {}
    cold_ms, warm_ms = [], []
    for text, _ in questions:
        on_text[text], ms = llm_p(text)
        cold_ms.append(ms)
        warm_ms.append(llm_p(text)[1])  # again: the prompt is cached, as after a prefill
    items = []
    with tempfile.TemporaryDirectory(prefix="end-of-turn-") as tmp:
        for voice in select_voices(args.voices):
            why = voice.missing()
            if why:
                print(f"<!-- {voice.name} skipped: {why} -->")
                continue
            for text, complete in questions:
                item = Item(voice.name, text, complete, llm_text=on_text[text])
                speech = speak(voice, text, Path(tmp))
                times, feature_times = [], []
                for pause in args.pauses:
                    item.smart_turn[pause] = smart.probability(with_pause(speech, pause))
                    times.append((smart.last_inference_s or 0) * 1000)
                    feature_times.append((smart.last_features_s or 0) * 1000)
                item.smart_turn_ms, item.features_ms = median(times), median(feature_times)
                heard = await stt.transcribe(with_pause(speech, args.pauses[0]), final=True)
                item.heard = heard.text
                if heard.text.strip(" .?!"):
                    item.llm_heard, item.llm_ms = llm_p(heard.text)
                    item.im_end_heard = llm_p(heard.text, keep_punctuation=True)[0]
                items.append(item)
    smart.close()
    llm.close()
    stt.close()
    return items, cold_ms, warm_ms


def report(items: list[Item], cold_ms: list[float], warm_ms: list[float],
           args: argparse.Namespace) -> None:
    first = args.pauses[0]
    voices = list(dict.fromkeys(i.voice for i in items))
    pauses = ", ".join(f"{p:g}" for p in args.pauses)
    print(f"## Per item (pause {first:g} s; Smart Turn at pauses {pauses} s)\n")
    heads = ["voice", "done?", "said", "heard (Whisper base)",
             *[f"ST {p:g}s" for p in args.pauses], "ST ms", "LLM said", "LLM heard",
             "im_end heard", "LLM ms"]
    print("| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
    for i in items:
        cells = [i.voice, "yes" if i.complete else "no", i.text, i.heard,
                 *[f"{i.smart_turn[p]:.2f}" for p in args.pauses], f"{i.smart_turn_ms:.0f}",
                 f"{i.llm_text:.3f}", f"{i.llm_heard:.3f}", f"{i.im_end_heard:.3f}",
                 f"{i.llm_ms:.0f}"]
        print("| " + " | ".join(cells) + " |")
    st = lambda i, p=first: i.smart_turn[p]  # noqa: E731
    rules: list[tuple[str, Callable[[Item], bool]]] = [
        *[(f"Smart Turn >= 0.5 (pause {p:g} s)", lambda i, p=p: i.smart_turn[p] >= 0.5)
          for p in args.pauses],
        *[(f"LLM on the words said >= {t:g}", lambda i, t=t: i.llm_text >= t)
          for t in (0.05, 0.1, 0.3, 0.5)],
        *[(f"LLM on the words heard >= {t:g}", lambda i, t=t: i.llm_heard >= t)
          for t in (0.05, 0.1, 0.3, 0.5, 0.8)],
        ("<|im_end|> after Whisper's text as written >= 0.5", lambda i: i.im_end_heard >= 0.5),
        *[(f"both: Smart Turn >= {a:g} and LLM heard >= {b:g}",
           lambda i, a=a, b=b: st(i) >= a and i.llm_heard >= b)
          for a, b in ((0.5, 0.5), (0.3, 0.3), (0.5, 0.1), (0.2, 0.1), (0.8, 0.5))],
        ("either: Smart Turn >= 0.5 or LLM heard >= 0.5",
         lambda i: st(i) >= 0.5 or i.llm_heard >= 0.5),
        *[(f"{w:g} x Smart Turn + {1 - w:g} x LLM heard >= {t:g}",
           lambda i, w=w, t=t: w * st(i) + (1 - w) * i.llm_heard >= t)
          for w, t in ((0.5, 0.5), (0.5, 0.7), (0.3, 0.5), (0.3, 0.7))],
    ]
    n_c = sum(i.complete for i in items)
    print(f"\n## Accuracy ({len(items)} items: {n_c} complete, {len(items) - n_c} unfinished,"
          f" {len(voices)} voices)\n")
    print("| rule | accuracy | cut off (of unfinished) | waited (of complete) | "
          + " | ".join(voices) + " |\n|---|---|---|---|" + "---|" * len(voices))
    for name, rule in rules:
        acc, cut, waited = score(items, rule)
        per_voice = [f"{score([i for i in items if i.voice == v], rule)[0]:.0%}" for v in voices]
        print(f"| {name} | {acc:.1%} | {cut} | {waited} | " + " | ".join(per_voice) + " |")
    st_ms = [i.smart_turn_ms for i in items]
    heard_ms = [i.llm_ms for i in items if i.heard]
    print("\n## Time per call (median, p90)\n")
    print("| call | median ms | p90 ms |\n|---|---|---|")
    for name, values in (("Smart Turn (features + model, 1 thread)", st_ms),
                         ("of which the log-mel features (numpy)", [i.features_ms for i in items]),
                         ("LLM, new text (cold: the user's words not read yet)", cold_ms),
                         ("LLM, same text again (as after a prefill)", warm_ms),
                         ("LLM on Whisper's words (new text)", heard_ms)):
        print(f"| {name} | {median(values):.0f} | {np.percentile(values, 90):.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.end_of_turn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voices", nargs="*", default=list(DEFAULT_VOICES),
                        help="bench.voices names (default: %(default)s)")
    parser.add_argument("--pauses", nargs="+", type=float, default=[0.25, 1.0],
                        help="silence after the words for Smart Turn, s; Whisper hears the first")
    parser.add_argument("--threads", type=int, default=1,
                        help="LLM and Whisper threads (default 1, as the tests: on a shared "
                        "2-core machine llama.cpp's spinning threads slow down 10-20x as soon "
                        "as anything else runs; the agent's default is 2)")
    parser.add_argument("--per-class", type=int, default=20,
                        help="complete and unfinished questions each (at most 20)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    print(f"# bench end_of_turn\n\n`{' '.join(['python -m bench.end_of_turn', *argv])}`"
          + f" at commit {commit()}; {machine()}; LLM ({V3Config().ai.model}) and Whisper"
          f" ({V3Config().stt.model}) on {args.threads} thread(s), Smart Turn on 1\n")
    items, cold_ms, warm_ms = asyncio.run(measure(args))
    report(items, cold_ms, warm_ms, args)
    print(f"\n({time.perf_counter() - t0:.0f} s in all; {machine().split(', ')[-1]}"
          .replace(" at the start", " at the end") + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
