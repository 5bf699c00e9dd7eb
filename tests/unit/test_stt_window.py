"""Which utterances take Whisper's short-window fast path (no model is loaded)."""

from voice_agent.core.config import V3Config
from voice_agent.services.stt_whisper import WhisperSTT

RATE = 16_000


FRAMES_PER_S = 100  # Whisper's mel frames


def test_default_window_takes_utterances_up_to_its_length_less_half_a_second() -> None:
    stt = WhisperSTT(V3Config())
    assert V3Config().stt.fast_window_s == 10.0
    assert stt.window_frames(RATE) == 10 * FRAMES_PER_S
    assert stt.window_frames(int(9.5 * RATE)) == 10 * FRAMES_PER_S
    # too close to the edge: the next window
    assert stt.window_frames(int(9.6 * RATE)) == 15 * FRAMES_PER_S


def test_longer_utterances_take_windows_5_s_longer_up_to_the_longest() -> None:
    stt = WhisperSTT(V3Config())
    assert V3Config().stt.fast_window_max_s == 25.0
    assert stt.window_frames(int(14.5 * RATE)) == 15 * FRAMES_PER_S
    assert stt.window_frames(int(16 * RATE)) == 20 * FRAMES_PER_S
    assert stt.window_frames(int(24.5 * RATE)) == 25 * FRAMES_PER_S
    assert stt.window_frames(int(24.6 * RATE)) is None  # faster-whisper's transcribe()
    assert not stt.fits_fast_path(int(28 * RATE))


def test_longest_window_below_the_shortest_keeps_the_shortest() -> None:
    stt = WhisperSTT(V3Config(stt={"fast_window_max_s": 0}))
    assert stt.window_frames(int(9.5 * RATE)) == 10 * FRAMES_PER_S
    assert not stt.fits_fast_path(int(9.6 * RATE))


def test_window_zero_always_uses_the_full_transcription() -> None:
    stt = WhisperSTT(V3Config(stt={"fast_window_s": 0}))
    assert not stt.fits_fast_path(RATE)


def test_window_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_STT__FAST_WINDOW_S", "15")
    monkeypatch.setenv("VOICE_AGENT_STT__FAST_WINDOW_MAX_S", "15")
    stt = WhisperSTT(V3Config())
    assert stt.window_frames(RATE) == 15 * FRAMES_PER_S
    assert not stt.fits_fast_path(int(14.6 * RATE))
