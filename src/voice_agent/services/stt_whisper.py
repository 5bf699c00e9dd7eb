"""Whisper speech to text with faster-whisper (CTranslate2), tuned for short voice-agent turns.

``WhisperModel.transcribe`` pads every input to 30 s, so the encoder costs the same for a
two-word answer as for half a minute of speech (~600 ms for base on 2 cores). Utterances that fit
a shorter window take a fast path: log-mel features padded to ``stt.fast_window_s`` (10 s, 1000
frames), encoded and decoded by the CTranslate2 model directly (~190 ms). A longer utterance
takes the next window in 5 s steps (15, 20, 25 s) up to ``stt.fast_window_max_s``; longer audio
falls back to ``transcribe()``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ProviderError
from voice_agent.core.priority import model_executor
from voice_agent.core.words import words_key
from voice_agent.services.batch_queue import BatchQueue
from voice_agent.services.base import STT_SAMPLE_RATE, STTService, Transcript
from voice_agent.services.models import model_path
from voice_agent.services.openmp import wait_policy_while_loading
from voice_agent.services.priority_lock import CORES, LATER, URGENT

if TYPE_CHECKING:  # faster_whisper is imported lazily: it is slow to import
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

log = logging.getLogger(__name__)

_HOP = 160  # samples per mel frame at 16 kHz
_MAX_TOKENS = 448  # Whisper's decoder length


@dataclass(frozen=True, slots=True)
class _Decoded:
    text: str
    no_speech_prob: float
    avg_logprob: float
    alternatives: tuple[str, ...] = ()


def distinct_hearings(best: str, others: list[str], limit: int) -> tuple[str, ...]:
    """Up to ``limit`` of ``others`` (best first) whose words differ from ``best``'s and from
    each other's."""
    seen = {words_key(best)}
    kept: list[str] = []
    for text in others:
        key = words_key(text)
        if len(kept) >= limit:
            break
        if key and key not in seen:
            seen.add(key)
            kept.append(text)
    return tuple(kept)


def _is_blank(text: str) -> bool:
    """True for empty or punctuation/symbol-only text (what Whisper emits for a cough)."""
    return not any(unicodedata.category(c)[0] in "LN" for c in text)


class WhisperSTT(STTService):
    name = "whisper"

    def __init__(self, config: V3Config, *, fast_window_s: float | None = None,
                 no_speech_threshold: float = 0.6, logprob_threshold: float = -1.0) -> None:
        """``fast_window_s``: the shortest encoder window of the fast path (0 disables it;
        default ``stt.fast_window_s``). Audio longer than a window less a 0.5 s margin takes the
        next, 5 s longer, up to ``stt.fast_window_max_s``; beyond that ``transcribe()``.
        ``no_speech_threshold``: above this no-speech probability the result is empty text;
        measured: speech <= 0.05, silence and noise 0.65-0.93.
        ``logprob_threshold``: a low-confidence decode (average log-prob below this) with a
        no-speech probability above half the threshold is also treated as no speech.
        """
        self._config = config
        window = config.stt.fast_window_s if fast_window_s is None else fast_window_s
        self._fast_frames = int(window * STT_SAMPLE_RATE / _HOP)
        self._max_frames = int(max(window, config.stt.fast_window_max_s) * STT_SAMPLE_RATE / _HOP)
        self._no_speech_threshold = no_speech_threshold
        self._logprob_threshold = logprob_threshold
        self._lock = threading.Lock()  # one model instance, one decode at a time
        self._queue = CORES  # callers wait here, not in executor threads: a transcript a
        # turn waits for (final, decisive) before other sessions' interims; and not beside
        # the LLM's prompt reads (services/priority_lock.py)
        self._worker = model_executor("whisper", config.server.model_threads_nice)
        self._batches: BatchQueue[np.ndarray, _Decoded] = BatchQueue(
            self._queue, self._worker, self._transcribe_batch_sync, config.stt.max_batch)
        self._model: WhisperModel | None = None
        self._tokenizer: Tokenizer | None = None
        self._suppress: list[int] = []
        self.path: Path | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def load(self) -> None:
        with wait_policy_while_loading("PASSIVE" if self._config.stt.threads_sleep_when_idle else None):
            import ctranslate2  # noqa: F401  (its own libgomp reads the policy as it loads)
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        cfg = self._config.stt
        self.path = model_path(self._config, "stt", prepare_missing=True)
        try:
            model = WhisperModel(str(self.path), device="cpu", compute_type=cfg.compute_type,
                                 cpu_threads=cfg.threads)
        except Exception as exc:  # a corrupt folder or an unsupported compute type
            raise ProviderError(self.name, f"cannot load {self.path}: {exc}", retryable=False) from exc
        lang = cfg.language if model.model.is_multilingual else "en"
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                              task="transcribe", language=lang)
        self._suppress = list(get_suppressed_tokens(tokenizer, [-1]))
        self._model, self._tokenizer = model, tokenizer

    def warmup(self) -> None:
        self._transcribe_sync(np.zeros(STT_SAMPLE_RATE, np.float32))

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None

    # -- transcription ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._queue.locked

    async def transcribe(self, audio: np.ndarray, *, final: bool = True) -> Transcript:
        beam = self._config.stt.final_beam_size if final else self._config.stt.beam_size
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        priority = URGENT if final else LATER
        if (frames := self._batch_window(audio)) is not None:
            # with other sessions' windows of its length waiting, if any
            result = await self._batches.call(audio, (beam, frames), priority)
        else:
            async with self._queue.hold(priority):
                result = await asyncio.get_running_loop().run_in_executor(
                    self._worker, functools.partial(self._transcribe_sync, audio, beam=beam))
        return Transcript(text=result.text, final=final, no_speech_prob=result.no_speech_prob,
                          alternatives=result.alternatives)

    def window_frames(self, samples: int) -> int | None:
        """The mel frames of the fast-path window for ``samples`` of audio: the shortest window,
        or one 5 s step longer at a time, that holds it with half a second to spare (Whisper
        read the last words badly without it); None past the longest (``transcribe()``)."""
        if self._fast_frames <= 0:
            return None
        step = 5 * STT_SAMPLE_RATE // _HOP
        frames = self._fast_frames
        while samples > frames * _HOP - STT_SAMPLE_RATE // 2:
            frames += step
            if frames > self._max_frames:
                return None
        return frames

    def fits_fast_path(self, samples: int) -> bool:
        return self.window_frames(samples) is not None

    def _batch_window(self, audio: np.ndarray) -> int | None:
        """The fast-path window's frames of ``audio`` when it can join a batch (None: not)."""
        if self._batches.max_batch <= 1 or len(audio) < STT_SAMPLE_RATE // 10:
            return None
        return self.window_frames(len(audio))

    def _transcribe_batch_sync(self, audios: Sequence[np.ndarray], kind: Hashable,
                               wanted: Callable[[], bool] | None = None) -> list[_Decoded]:
        """Fast-path windows of one length decoded as one batch (services/batch_queue.py;
        ``kind``: the beam and the window's frames); not decoded once encoded if ``wanted()``
        says that nobody waits for their words any more."""
        assert isinstance(kind, tuple)
        beam, frames = kind
        return self._locked(lambda: self._decode_windows(audios, beam, frames, wanted), audios)

    def _transcribe_sync(self, audio: np.ndarray, *, force_full: bool = False,
                         beam: int | None = None) -> _Decoded:
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if len(audio) < STT_SAMPLE_RATE // 10:  # under 100 ms: nothing Whisper can read
            return _Decoded("", 1.0, 0.0)
        beam = beam or self._config.stt.final_beam_size
        frames = self.window_frames(len(audio))
        if frames is not None and not force_full:
            return self._transcribe_batch_sync([audio], (beam, frames))[0]
        return self._locked(lambda: [self._decode_full(audio, beam)], [audio])[0]

    def _locked(self, decode: Callable[[], list[_Decoded]],
                audios: Sequence[np.ndarray]) -> list[_Decoded]:
        """``decode()`` on the one model, its failures as ProviderError, what it made up on
        silence dropped (:meth:`_guard`)."""
        with self._lock:
            if self._model is None:
                raise ProviderError(self.name, "model not loaded", retryable=False)
            t0 = time.perf_counter()
            try:
                out = decode()
            except ProviderError:
                raise
            except Exception as exc:
                raise ProviderError(self.name, f"transcription failed: {exc}") from exc
        log.debug("whisper %s s audio in %.0f ms: %r (no_speech %s)",
                  "/".join(f"{len(a) / STT_SAMPLE_RATE:.2f}" for a in audios),
                  (time.perf_counter() - t0) * 1000, [o.text for o in out],
                  "/".join(f"{o.no_speech_prob:.2f}" for o in out))
        return [self._guard(o) for o in out]

    def _guard(self, out: _Decoded) -> _Decoded:
        """Drop what Whisper makes up on silence and noise ("you", "Thanks for watching")."""
        silent = out.no_speech_prob > self._no_speech_threshold or (
            out.avg_logprob < self._logprob_threshold
            and out.no_speech_prob > self._no_speech_threshold / 2)
        if silent or _is_blank(out.text):
            return _Decoded("", out.no_speech_prob, out.avg_logprob)
        return out

    def _decode_windows(self, audios: Sequence[np.ndarray], beam: int, frames: int,
                        wanted: Callable[[], bool] | None = None) -> list[_Decoded]:
        from faster_whisper.audio import pad_or_trim

        model, tok = self._model, self._tokenizer
        assert model is not None and tok is not None
        features = np.stack([pad_or_trim(model.feature_extractor(a)[:, :-1], frames)
                             for a in audios])  # [:, :-1] as transcribe() drops the last frame
        encoded = model.encode(features)
        if wanted is not None and not wanted():
            # A pause inside a question, and the user went on while it was encoded (under load
            # a third of the passes): the decoder is the larger part of a pass (base, 10 s
            # window, beam 5, alone: 127 ms encoding of 334).
            log.debug("whisper: %d window(s) encoded, not decoded: nobody waits", len(audios))
            return [_Decoded("", 1.0, 0.0) for _ in audios]
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        # A cap on new tokens (~8 per second of audio) stops a hallucination loop early.
        new_tokens = 16 + int(8 * max(len(a) for a in audios) / STT_SAMPLE_RATE)
        # The beam's other hypotheses come free with it: the first few that differ in words
        # from the best are its other hearings (stt.alternatives).
        wanted = self._config.stt.alternatives
        results = model.model.generate(
            encoded, [prompt] * len(audios), beam_size=beam,
            num_hypotheses=beam if wanted else 1,
            max_length=min(_MAX_TOKENS, len(prompt) + new_tokens),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self._suppress)
        return [self._decoded(result, tok) for result in results]

    def _decoded(self, result: Any, tok: Tokenizer) -> _Decoded:
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else 0.0
        text = tok.decode(tokens).strip()
        unsure = avg_logprob < self._config.stt.alternatives_below_logprob
        others = [tok.decode(ids).strip() for ids in result.sequences_ids[1:]] if unsure else []
        return _Decoded(text, float(result.no_speech_prob), float(avg_logprob),
                        distinct_hearings(text, others, self._config.stt.alternatives))

    def _decode_full(self, audio: np.ndarray, beam: int) -> _Decoded:
        model = self._model
        assert model is not None
        cfg = self._config.stt
        lang = cfg.language if model.model.is_multilingual else "en"
        segments, _info = model.transcribe(
            audio, language=lang, beam_size=beam, vad_filter=False,
            without_timestamps=True, condition_on_previous_text=False)
        segs = list(segments)
        if not segs:  # transcribe() itself skipped everything as no speech
            return _Decoded("", 1.0, 0.0)
        text = " ".join(s.text.strip() for s in segs).strip()
        no_speech = min(s.no_speech_prob for s in segs)
        avg_logprob = float(np.mean([s.avg_logprob for s in segs]))
        return _Decoded(text, float(no_speech), avg_logprob)

    def transcribe_full_sync(self, audio: np.ndarray) -> Transcript:
        """Blocking, always through ``WhisperModel.transcribe`` (for comparisons and tests)."""
        out = self._transcribe_sync(audio, force_full=True)
        return Transcript(text=out.text, final=True, no_speech_prob=out.no_speech_prob)
