"""aiortc's per-frame audio level, computed with numpy instead of a Python loop.

Every audio frame aiortc sends carries its level (RFC 6465) in an RTP header extension. aiortc
computes it on the event loop by unpacking the frame's samples one by one in Python: ~150 µs per
20 ms mono frame at 48 kHz, ~290 µs stereo, and it showed up in py-spy profiles of the server's
loop under 4 sessions. The same formula over a numpy view of the same bytes takes ~4 µs and
gives the same integer (the sum of squares is exact in int64, then the float steps are aiortc's).

aiortc is pinned; its sender looks the function up on ``aiortc.rtp`` for every frame, so
replacing that attribute is enough. If a later aiortc moves it, nothing is replaced (log line).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from aiortc import rtp
from av import AudioFrame

log = logging.getLogger(__name__)

_MAX_SAMPLE = 32767
_MIN_LEVEL = -127
aiortc_audio_level = rtp.compute_audio_level_dbov  # aiortc's own, kept for comparison


def audio_level_dbov(frame: AudioFrame) -> int:
    """The level of ``frame`` in dBov (-127..0), exactly as ``aiortc.rtp.compute_audio_level_dbov``.

    Like aiortc, it reads the first plane's bytes as int16 samples and divides by
    ``frame.samples`` (per channel), so packed stereo reads as 3 dB louder; the receiver only
    compares levels, and being identical keeps the header the same as before.
    """
    pcm = np.frombuffer(frame.planes[0], dtype=np.int16).astype(np.int64)
    energy = float(np.dot(pcm, pcm))
    rms = math.sqrt(energy / (frame.samples * _MAX_SAMPLE * _MAX_SAMPLE))
    if rms <= 0:
        return _MIN_LEVEL
    return round(min(max(20 * math.log10(rms), _MIN_LEVEL), 0))


def install() -> bool:
    """Make aiortc's senders use :func:`audio_level_dbov`; False if aiortc's layout differs."""
    if not callable(getattr(rtp, "compute_audio_level_dbov", None)):
        log.warning("aiortc has no rtp.compute_audio_level_dbov: keeping its own audio level")
        return False
    rtp.compute_audio_level_dbov = audio_level_dbov  # type: ignore[assignment]
    return True
