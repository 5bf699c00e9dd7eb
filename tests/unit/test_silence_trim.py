"""Trimming the silence around a TTS piece: the reply's first sound and joins inside a sentence."""

import numpy as np

from voice_agent.pipeline.silence import ends_sentence, trim_silence
from voice_agent.services.base import AudioChunk

RATE = 22_050


def piece(lead_s: float, voice_s: float, tail_s: float, hiss: int = 20) -> AudioChunk:
    """A tone with near silence (a low hiss, as Piper's output has) before and after it."""
    rng = np.random.default_rng(0)
    n = [int(RATE * s) for s in (lead_s, voice_s, tail_s)]
    t = np.arange(n[1]) / RATE
    voice = 6000 * np.sin(2 * np.pi * 200 * t)
    pcm = np.concatenate([rng.integers(-hiss, hiss, n[0]), voice, rng.integers(-hiss, hiss, n[2])])
    return AudioChunk(pcm=pcm.astype(np.int16), sample_rate=RATE)


def test_lead_trim_starts_the_audio_just_before_the_first_sound():
    chunk = piece(0.040, 0.5, 0.150)
    out = trim_silence(chunk, lead=True)
    assert 0.004 <= len(out.pcm) / RATE - 0.5 - 0.150 <= 0.006  # 5 ms kept before the sound
    assert np.array_equal(out.pcm[-100:], chunk.pcm[-100:])  # the tail is untouched


def test_tail_trim_keeps_a_short_breath_and_the_whole_sound():
    chunk = piece(0.040, 0.5, 0.150)
    out = trim_silence(chunk, tail=True)
    kept_tail = len(out.pcm) / RATE - 0.040 - 0.5
    assert 0.035 <= kept_tail <= 0.045, kept_tail
    loud = np.abs(chunk.pcm) > 1000
    assert np.count_nonzero(np.abs(out.pcm) > 1000) == np.count_nonzero(loud)


def test_silence_alone_and_no_trim_asked_return_the_chunk_itself():
    quiet = piece(0.1, 0.0, 0.1)
    assert trim_silence(quiet, lead=True, tail=True) is quiet
    chunk = piece(0.04, 0.2, 0.1)
    assert trim_silence(chunk) is chunk


def test_sentence_ends_keep_their_pause():
    assert ends_sentence("It is Paris.") and ends_sentence('He said "yes!" ')
    assert ends_sentence("Really?") and not ends_sentence("The capital of France")
    assert not ends_sentence("Well, in short,") and not ends_sentence("")
