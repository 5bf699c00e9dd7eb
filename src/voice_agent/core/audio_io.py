"""Reading audio files of any common format, rate and channel count (PyAV/FFmpeg)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def read_audio_16k(path: Path) -> np.ndarray:
    """Decode ``path`` to float32 mono 16 kHz in [-1, 1]."""
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot read audio from {path}: {exc}") from None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    out: list[np.ndarray] = []
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        for frame in container.decode(audio=0):
            for r in resampler.resample(frame):
                out.append(r.to_ndarray().reshape(-1))
        for r in resampler.resample(None):
            out.append(r.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def resample_to_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    """int16 mono at ``rate`` → float32 mono 16 kHz, with FFmpeg's resampler."""
    frame = av.AudioFrame.from_ndarray(np.asarray(pcm, np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
