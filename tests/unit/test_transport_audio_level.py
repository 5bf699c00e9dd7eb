"""The numpy audio level gives aiortc's own value for every frame, and aiortc's sender uses it."""

from __future__ import annotations

import inspect

import av
import numpy as np
import pytest
from aiortc import rtcrtpsender, rtp

from voice_agent.transport import audio_level


def frame(pcm: np.ndarray, layout: str) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16",
                                   layout=layout)
    f.sample_rate = 48_000
    return f


@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_same_level_as_aiortc(layout: str) -> None:
    rng = np.random.default_rng(7)
    channels = 2 if layout == "stereo" else 1
    cases = [np.zeros(960 * channels), np.full(960 * channels, 32767),
             np.full(960 * channels, -32768), np.array([1] + [0] * (960 * channels - 1))]
    # Levels across the whole range, so that values near a rounding edge are among them.
    cases += [rng.normal(0, 10 ** rng.uniform(0, 4.3), 960 * channels).clip(-32768, 32767)
              for _ in range(300)]
    for pcm in cases:
        f = frame(pcm, layout)
        assert audio_level.audio_level_dbov(f) == audio_level.aiortc_audio_level(f)
    assert audio_level.audio_level_dbov(frame(cases[0], layout)) == -127
    assert audio_level.audio_level_dbov(frame(cases[1], layout)) == 0  # full scale


def test_installed_where_aiortc_looks_it_up() -> None:
    # The sender reads the function from aiortc.rtp on every frame: replacing it there is enough.
    assert "rtp.compute_audio_level_dbov(" in inspect.getsource(rtcrtpsender.RTCRtpSender)
    assert audio_level.install()
    assert rtp.compute_audio_level_dbov is audio_level.audio_level_dbov
    assert audio_level.install()  # twice is harmless
