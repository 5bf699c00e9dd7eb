"""Whisper log-mel features as Smart Turn reads them: shape, the 8 s window (the last 8 s,
padded with silence at the start), and values on silence and a tone. The exact match with
Pipecat's own implementation was checked once by hand (identical values); Pipecat is not
imported by the tests or the agent."""

from __future__ import annotations

import numpy as np

from voice_agent.services.log_mel import HOP, SAMPLE_RATE, fit_window, mel_filters, whisper_log_mel


def tone(hz: float, seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_shape_and_dtype_for_short_exact_and_long_audio() -> None:
    for seconds in (0.01, 1.0, 8.0, 11.5):
        features = whisper_log_mel(tone(440, seconds))
        assert features.shape == (80, 800)
        assert features.dtype == np.float32
        assert np.isfinite(features).all()
    assert whisper_log_mel(tone(440, 2.0), n_mels=80, frames=300).shape == (80, 300)


def test_short_audio_is_padded_with_silence_at_the_start() -> None:
    audio = tone(440, 1.0)
    padded = np.concatenate([np.zeros(7 * SAMPLE_RATE, np.float32), audio])
    np.testing.assert_array_equal(whisper_log_mel(audio), whisper_log_mel(padded))
    window = fit_window(audio, 800 * HOP)
    assert len(window) == 128000 and not window[:-len(audio)].any()
    np.testing.assert_array_equal(window[-len(audio):], audio)
    features = whisper_log_mel(audio)
    per_frame = features.max(axis=0)  # the tone fills the last 100 frames only
    assert per_frame[:690].max() == features.min()  # silence before it: the floor
    assert per_frame[710:].min() > features.min() + 1.5


def test_long_audio_keeps_its_last_8_seconds() -> None:
    audio = np.concatenate([tone(3000, 3.0), tone(440, 8.0)])
    np.testing.assert_array_equal(whisper_log_mel(audio), whisper_log_mel(audio[-128000:]))
    band = mel_filters(80).argmax(axis=0)  # no 3 kHz energy left in the window
    assert whisper_log_mel(audio)[band[3000 * 400 // SAMPLE_RATE]].max() < \
        whisper_log_mel(tone(3000, 8.0))[band[3000 * 400 // SAMPLE_RATE]].max() - 1


def test_silence_is_the_floor_everywhere() -> None:
    # log10 of the 1e-10 clamp is -10: (-10 + 4) / 4 = -1.5
    np.testing.assert_array_equal(whisper_log_mel(np.zeros(16000, np.float32)),
                                  np.full((80, 800), -1.5, np.float32))


def test_a_tone_lights_its_own_mel_band_within_8_decades() -> None:
    features = whisper_log_mel(tone(1000, 8.0))
    filters = mel_filters(80)
    bin_hz = np.linspace(0, SAMPLE_RATE / 2, filters.shape[1])
    centres = bin_hz[filters.argmax(axis=1)]
    loudest = int(np.median(features.argmax(axis=0)))
    assert abs(centres[loudest] - 1000) < 60, centres[loudest - 1:loudest + 2]
    assert features.max() - features.min() <= 2.0 + 1e-6  # 8 decades, divided by 4
    middle = features[:, 10:-10]  # away from the reflect-padded edges: steady
    assert np.ptp(middle, axis=1).max() < 0.05


def test_the_waveform_is_normalised_first_so_the_level_does_not_matter() -> None:
    # (up to the 1e-7 added to the variance: ~1e-3 here)
    np.testing.assert_allclose(whisper_log_mel(tone(440, 2.0, 0.01)),
                               whisper_log_mel(tone(440, 2.0, 0.5)), atol=2e-3)


def test_mel_filters_are_slaney_triangles_of_equal_area() -> None:
    filters = mel_filters(80)
    assert filters.shape == (80, 201)
    assert (filters >= 0).all() and (filters.sum(axis=1) > 0).all()
    # area-normalised: each triangle's integral over Hz is 1 (2 / width * height 1 * width / 2)
    areas = filters.sum(axis=1) * (SAMPLE_RATE / 2 / 200)
    assert np.allclose(areas[10:], 1.0, rtol=0.1)  # the narrow low ones are coarsely sampled
    assert not filters.flags.writeable
