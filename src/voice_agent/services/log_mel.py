"""Whisper-style log-mel features in numpy, as the Smart Turn v3 model reads them.

The recipe is Whisper's (and Hugging Face's ``WhisperFeatureExtractor``, which Smart Turn was
trained with): 16 kHz audio, a centred STFT of 400 samples (25 ms) every 160 (10 ms) with a
periodic Hann window, the power spectrum through a Slaney-style mel filterbank (0-8 kHz,
area-normalised triangles), ``log10`` clamped at 1e-10, at most 8 decades below the loudest
value, then ``(x + 4) / 4``. Smart Turn also normalises the waveform to zero mean and unit
variance first, and reads a fixed window: the *last* 8 s of the turn, silence padded at the
start when the turn is shorter. Written from that description and checked against Pipecat's
own numpy code (identical to the last bit on a tone, noise, speech and silence); no torch,
no transformers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    step = np.log(6.4) / 27.0  # 27 mels per factor of 6.4 above 1 kHz
    return np.where(hz < 1000.0, hz * 3.0 / 200.0,
                    15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / step)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    step = np.log(6.4) / 27.0
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp((mel - 15.0) * step))


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangles evenly spaced on the mel scale from 0 Hz to
    Nyquist; each is scaled by 2 / its width in Hz so that every filter has the same area."""
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array(rate / 2.0))), n_mels + 2))
    bins = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    out = tri * (2.0 / (upper - lower))
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (as ``torch.hann_window``), not numpy's symmetric one."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


def fit_window(audio: np.ndarray, samples: int) -> np.ndarray:
    """The last ``samples`` samples of ``audio``, zero-padded at the start when shorter."""
    x = np.asarray(audio, np.float32).reshape(-1)[-samples:]
    if len(x) < samples:
        x = np.concatenate([np.zeros(samples - len(x), np.float32), x])
    return x


def whisper_log_mel(audio: np.ndarray, n_mels: int = 80, frames: int = 800, *,
                    normalize: bool = True) -> np.ndarray:
    """float32 ``[n_mels, frames]`` features of the last ``frames`` hops (800: 8 s) of
    ``audio`` (16 kHz mono, any float scale), padded with silence at the start.
    ``normalize``: zero mean, unit variance over the window first, as Smart Turn expects."""
    x = fit_window(audio, frames * HOP)
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    half = N_FFT // 2
    padded = np.pad(x.astype(np.float64), half, mode="reflect")  # centred frames
    # Every hop's 400 samples (a view); the STFT has frames + 1 of them: the last is dropped.
    windows = sliding_window_view(padded, N_FFT)[::HOP][:frames] * _hann(N_FFT)
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2  # [frames, n_fft/2 + 1]
    mel = mel_filters(n_mels) @ power.T
    logmel = np.log10(np.maximum(mel, 1e-10))
    logmel = np.maximum(logmel, logmel.max() - 8.0)
    return ((logmel + 4.0) / 4.0).astype(np.float32)
