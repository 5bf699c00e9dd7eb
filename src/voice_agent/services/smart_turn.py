"""Smart Turn v3.2: has the user finished their turn, judged from the sound of it.

Why: a pause alone cannot tell "What is the capital of France?" from "What is the capital
of ..." said while thinking; waiting ~1 s on every pause to be safe is the largest part of the
agent's answer latency. Smart Turn (Pipecat's open model, BSD-2-Clause) reads the prosody of the
last 8 s of the turn, intonation and the way words trail off, and says how likely it is that
the speaker is done. It complements the LLM's probability that the sentence ends after the
transcript's words (:meth:`LlamaCppLLM.end_of_turn_probability`), which reads the words.

The model ships inside the ``pipecat-ai`` wheel (installed with ``--no-deps`` for this one file:
``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``, 8,679,182 bytes). Pipecat is
never imported: its ``__init__`` needs packages we do not install. Input ``input_features``
float32 ``[N, 80, 800]`` (8 s of Whisper log-mel, :mod:`voice_agent.services.log_mel`), output
``logits`` ``[N, 1]``, which despite its name is already a probability (the graph ends with a
Sigmoid; Pipecat reads it as one and calls a turn complete above 0.5).

Measured here (2-core VM, 1 onnxruntime thread, docs/end_of_turn.md): load ~0.1 s; one call
~28 ms on a quiet machine, 70-160 ms on a loaded one (the log-mel features 10-25 ms of it). On
synthetic voices (espeak-ng, flite, Piper) it called 57 of 100 and 27 of 40 unfinished
questions complete at 0.5: a TTS engine speaks a fragment with sentence-final prosody. The
LLM's signal on the words did far better there; measure this one on real speech before
giving it weight.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from voice_agent.core.errors import ModelNotReadyError
from voice_agent.services.log_mel import whisper_log_mel

log = logging.getLogger(__name__)

PACKAGE = "pipecat-ai==1.14.0"
MODEL_IN_PACKAGE = Path("audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")
MODEL_BYTES = 8_679_182
WINDOW_S = 8.0
"""The model reads the last 8 s of the turn; a shorter turn is padded with silence before it."""


def find_model_file() -> Path:
    """The ONNX file inside the installed ``pipecat-ai`` package, found without importing it:
    ``find_spec`` of a top-level name only locates the package (its ``__init__`` does not run;
    a dotted name would import the parents)."""
    install = f"pip install --no-deps {PACKAGE}"
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotReadyError(
            "smart_turn", f"package pipecat-ai is not installed ({install}): the Smart Turn "
            "v3.2 model ships inside it")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_IN_PACKAGE
    if not path.is_file():
        raise ModelNotReadyError(
            "smart_turn", f"{path} is missing: install the version that ships it ({install})")
    size = path.stat().st_size
    if size != MODEL_BYTES:
        raise ModelNotReadyError(
            "smart_turn", f"{path} has {size} bytes, not {MODEL_BYTES} ({install})")
    return path


class SmartTurn:
    """One ONNX session; :meth:`probability` is thread-safe and blocking (~25-60 ms): call it
    from a worker thread, not the event loop."""

    name = "smart_turn"

    def __init__(self, model_file: str | Path | None = None, *, threads: int = 1) -> None:
        self.model_file = Path(model_file) if model_file is not None else None
        self.threads = threads
        self.last_inference_s: float | None = None
        """Wall time of the last :meth:`probability` call, features included."""
        self.last_features_s: float | None = None
        """Of which computing the log-mel features."""
        self._session: Any = None  # onnxruntime.InferenceSession

    def load(self) -> None:
        import onnxruntime as ort

        path = self.model_file or find_model_file()
        if not path.is_file():
            raise ModelNotReadyError(self.name, f"{path} does not exist")
        options = ort.SessionOptions()
        # One thread: it shares 2 cores with Whisper, the LLM and TTS; onnxruntime's default
        # spins a thread per core, which slows everything else down for little gain.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelNotReadyError(self.name, f"cannot load {path}: {exc}") from exc
        self.model_file = path
        log.debug("Smart Turn loaded from %s in %.2f s", path, time.perf_counter() - t0)

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def probability(self, audio_16k: np.ndarray) -> float:
        """Probability (0..1) that the speaker has finished, from the turn's 16 kHz mono
        audio up to now (any scale: the features normalise it). Give it the whole turn
        including the pause so far (Pipecat gives its speech from 0.5 s before it started
        to the VAD's stop, ~0.2 s into the pause); only the last 8 s are read."""
        if self._session is None:
            self.load()
        t0 = time.perf_counter()
        audio = np.asarray(audio_16k)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        features = whisper_log_mel(audio, n_mels=80, frames=int(WINDOW_S * 100))[None]
        self.last_features_s = time.perf_counter() - t0
        (out,) = self._session.run(["logits"], {"input_features": features})
        p = float(np.asarray(out).reshape(-1)[0])
        self.last_inference_s = time.perf_counter() - t0
        if not math.isfinite(p):
            raise ValueError(f"Smart Turn returned {p}")
        return min(1.0, max(0.0, p))

    def close(self) -> None:
        self._session = None
