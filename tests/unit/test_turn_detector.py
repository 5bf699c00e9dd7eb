"""Turn detection on real speech with the real Silero VAD (tiny, loads in milliseconds)."""

import numpy as np
import pytest

from voice_agent.core.config import load_config
from voice_agent.pipeline.turn_detector import TurnDetector, TurnEvent, TurnOptions
from voice_agent.services.vad_silero import SileroVADFactory
from tests.helpers.speech import noise_16k, silence_16k, speech_16k, trim


@pytest.fixture(scope="module")
def vad_factory():
    f = SileroVADFactory(load_config())
    f.load()
    return f


def run(detector: TurnDetector, audio: np.ndarray) -> list[tuple[TurnEvent, float]]:
    n = detector.vad.frame_samples
    events = []
    for i in range(0, len(audio) - n + 1, n):
        ev = detector.process(audio[i:i + n])
        if ev is not None:
            events.append((ev, (i + n) / 16000))
    return events


def test_one_question_is_one_turn_ending_after_the_silence(vad_factory):
    speech = speech_16k("What is the capital of France?", pad_before=0.5, pad_after=0.0)
    audio = np.concatenate([speech, silence_16k(1.5)])
    d = TurnDetector(vad_factory.create(), TurnOptions(end_of_turn_silence_ms=500))
    events = run(d, audio)
    kinds = [e for e, _ in events]
    assert kinds == [TurnEvent.SPEECH_START, TurnEvent.PAUSE, TurnEvent.END_OF_TURN]
    start, end = events[0][1], events[-1][1]
    assert 0.5 <= start <= 0.9
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    speech_end = (loud[-1] + 1) / 16000  # espeak leaves some silence at the end of its own WAV
    # The turn ends about end_of_turn_silence_ms after the speech, not before it.
    assert speech_end + 0.4 <= end <= speech_end + 0.8


@pytest.mark.parametrize("audio", [silence_16k(3), noise_16k(3, 0.05), noise_16k(3, 0.3, seed=1)],
                         ids=["silence", "soft-noise", "loud-noise"])
def test_silence_and_noise_start_no_turn(vad_factory, audio):
    d = TurnDetector(vad_factory.create(), TurnOptions())
    assert run(d, audio) == []


def test_a_short_pause_inside_a_sentence_does_not_end_the_turn(vad_factory):
    a = trim(speech_16k("The first half,", pad_before=0.3, pad_after=0.0))
    b = trim(speech_16k("and the second half.", pad_before=0.0, pad_after=0.0))
    audio = np.concatenate([silence_16k(0.3), a, silence_16k(0.25), b, silence_16k(1.0)])
    d = TurnDetector(vad_factory.create(), TurnOptions(end_of_turn_silence_ms=500))
    kinds = [e for e, _ in run(d, audio)]
    assert kinds.count(TurnEvent.SPEECH_START) == 1 and kinds.count(TurnEvent.END_OF_TURN) == 1


def test_a_monologue_is_cut_at_the_maximum_length(vad_factory):
    speech = speech_16k("one two three four five six seven eight nine ten " * 2, pad_after=0.0)
    d = TurnDetector(vad_factory.create(), TurnOptions(max_utterance_s=2.0))
    events = run(d, speech)
    assert events[1][0] is TurnEvent.END_OF_TURN or TurnEvent.END_OF_TURN in [e for e, _ in events]
    first_end = next(t for e, t in events if e is TurnEvent.END_OF_TURN)
    assert first_end - events[0][1] <= 2.1
