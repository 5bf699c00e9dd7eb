"""The voices `bench accuracy` asks its questions in, made at run time (no audio in the repo).

Three engines, chosen because they sound unlike each other and unlike a person in different ways:
espeak-ng (formant synthesis: accents, a female variant, three speeds), Debian's flite voices
(older diphone/clustergen voices: kal, slt, awb, rms) and Piper (neural, the voice the agent
itself speaks with, at other speeds). Each engine's WAV goes through sox to 48 kHz mono int16
with the same lead-in and pad as ``bench latency``'s questions (speech_set.item_from_wav).

espeak-ng and flite run as commands (``Voice.command``); Piper runs in this process, one model
load for all its questions (its CLI reloads the model for every line: ~1.5 s each).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .speech_set import SpeechItem, item_from_wav

ENGINES = ("espeak-ng", "flite", "piper")
PIPER_VOICE = "en_US-joe-medium"
"""The one Piper voice the venv ships (the agent's own): other speeds make it other voices."""


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str
    """espeak-ng, flite or piper."""
    voice: str
    """espeak-ng's -v, flite's -voice, or the Piper model name."""
    rate: float = 0.0
    """espeak-ng: words per minute (-s); piper: speed multiplier (length_scale = the model's
    own / rate); flite: unused (its voices' own rate)."""

    def command(self, text: str, out: Path) -> list[str] | None:
        """The command line that writes ``text`` spoken to ``out`` (None: made in-process)."""
        if self.engine == "espeak-ng":
            return ["espeak-ng", "-v", self.voice, "-s", str(int(self.rate)), "-w", str(out), text]
        if self.engine == "flite":
            return ["flite", "-voice", self.voice, "-t", text, "-o", str(out)]
        if self.engine == "piper":
            return None
        raise ValueError(f"unknown engine {self.engine!r}")

    def describe(self) -> str:
        """How the voice is made, for the report."""
        if self.engine == "piper":
            return f"Piper {self.voice}, speed ×{self.rate:g} (length_scale ÷ {self.rate:g})"
        cmd = self.command("TEXT", Path("out.wav"))
        assert cmd is not None
        return " ".join(cmd)

    def missing(self) -> str | None:
        """Why this voice cannot be made here (None: it can)."""
        if self.engine == "piper":
            if importlib.util.find_spec("piper") is None:
                return "the piper package is not installed (pip install -e .)"
            return None
        if shutil.which(self.engine) is None:
            return f"{self.engine} is not installed (scripts/install-system.sh)"
        return None

    def render(self, text: str, out: Path, timeout_s: float = 60.0) -> None:
        """Write ``text`` spoken by this voice to ``out`` (a WAV at the engine's own rate)."""
        cmd = self.command(text, out)
        if cmd is not None:
            subprocess.run(cmd, check=True, timeout=timeout_s, capture_output=True)
        else:
            _piper_wav(text, out, self.voice, self.rate)


VOICES: tuple[Voice, ...] = (
    Voice("espeak-us", "espeak-ng", "en-us", 160),  # bench latency's voice
    Voice("espeak-gb", "espeak-ng", "en-gb", 160),
    Voice("espeak-us-f3", "espeak-ng", "en-us+f3", 160),  # a female variant
    Voice("espeak-us-slow", "espeak-ng", "en-us", 120),
    Voice("espeak-us-fast", "espeak-ng", "en-us", 210),
    Voice("flite-kal", "flite", "kal"),
    Voice("flite-slt", "flite", "slt"),
    Voice("flite-awb", "flite", "awb"),  # Scottish English
    Voice("flite-rms", "flite", "rms"),
    Voice("piper-joe", "piper", PIPER_VOICE, 1.0),
    Voice("piper-joe-fast", "piper", PIPER_VOICE, 1.3),
)


def voice_names() -> list[str]:
    return [v.name for v in VOICES]


def select_voices(names: list[str] | None) -> list[Voice]:
    """The voices named (all of them for None/empty), in the order given; unknown names raise."""
    if not names:
        return list(VOICES)
    by_name = {v.name: v for v in VOICES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown voice(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]


@cache
def _piper(model: str) -> Any:
    from piper import PiperVoice

    from voice_agent.core.config import V3Config
    from voice_agent.services.models import model_path

    config = V3Config()
    config.voice.voice = model
    # Default config: the piper provider and its voice, whatever the user's config says.
    path = model_path(config, "tts", prepare_missing=True)
    return PiperVoice.load(str(path), config_path=str(path.with_name(path.name + ".json")))


def _piper_wav(text: str, out: Path, model: str, speed: float) -> None:
    from piper import SynthesisConfig

    voice = _piper(model)
    syn = SynthesisConfig(length_scale=voice.config.length_scale / speed)
    with wave.open(str(out), "wb") as w:
        voice.synthesize_wav(text, w, syn_config=syn)


def make_voice_set(voice: Voice, questions: list[str], folder: Path) -> list[SpeechItem]:
    """One 48 kHz WAV per question, spoken by ``voice``, in ``folder`` (the caller's temp dir)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, text in enumerate(questions):
        raw = folder / f"{voice.name}-{i:02d}.raw.wav"
        voice.render(text, raw)
        items.append(item_from_wav(text, raw, folder / f"{voice.name}-{i:02d}.wav"))
    return items


def main() -> None:  # pragma: no cover - a listening aid: python -m bench.voices DIR
    import sys

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="voices-"))
    for v in VOICES:
        why = v.missing()
        if why:
            print(f"{v.name}: skipped, {why}")
            continue
        item = make_voice_set(v, ["What is the capital of France?"], folder)[0]
        print(f"{v.name}: {item.path} ({item.speech_end_s:.2f} s of speech)")


if __name__ == "__main__":  # pragma: no cover
    main()
