"""Which utterances take Whisper's short-window fast path (no model is loaded)."""

from voice_agent.core.config import V3Config
from voice_agent.services.stt_whisper import WhisperSTT

RATE = 16_000


def test_default_window_takes_utterances_up_to_its_length_less_half_a_second() -> None:
    stt = WhisperSTT(V3Config())
    assert V3Config().stt.fast_window_s == 10.0
    assert stt.fits_fast_path(int(9.5 * RATE))
    assert not stt.fits_fast_path(int(9.6 * RATE))  # too close to the edge: full transcribe()


def test_window_zero_always_uses_the_full_transcription() -> None:
    stt = WhisperSTT(V3Config(stt={"fast_window_s": 0}))
    assert not stt.fits_fast_path(RATE)


def test_window_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_STT__FAST_WINDOW_S", "15")
    assert WhisperSTT(V3Config()).fits_fast_path(int(14 * RATE))
