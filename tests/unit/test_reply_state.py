from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.reply import ReplyState, SpokenPiece


def state() -> ReplyState:
    s = ReplyState(text="One two three four. Five six seven eight.")
    s.pieces = [SpokenPiece("One two three four.", 0.0, 2.0), SpokenPiece("Five six seven eight.", 2.0, 4.0)]
    s.audio_queued_s = 4.0
    return s


def test_nothing_heard_before_audio_played():
    assert state().spoken_text(0.0) == ""


def test_whole_pieces_and_a_proportional_part_of_the_current_one():
    s = state()
    assert s.spoken_text(2.0) == "One two three four."
    assert s.spoken_text(3.0) == "One two three four. Five six"
    assert s.spoken_text(9.0) == "One two three four. Five six seven eight."


def test_metrics_spans_are_measured_from_the_end_of_speech():
    m = TurnMetrics(turn=1)
    for i, stage in enumerate(["speech_end", "end_of_turn", "transcript_final", "llm_first_token",
                               "first_sentence", "tts_first_audio", "first_audio_sent", "reply_done"]):
        m.mark(stage, 100.0 + i * 0.1)
    d = m.as_dict()
    assert d["end_of_turn_delay_ms"] == 100.0
    assert d["stt_ms"] == 100.0
    assert d["end_of_speech_to_first_audio_ms"] == 600.0
    assert d["at_reply_done_ms"] == 700.0
    m.mark("speech_end", 0.0)  # first mark wins: a stage happens once per turn
    assert m.as_dict()["end_of_speech_to_first_audio_ms"] == 600.0


def test_work_done_during_the_pause_shows_as_zero_span_and_early_offset():
    m = TurnMetrics(turn=1)
    m.mark("speech_end", 10.0)
    m.mark("transcript_final", 10.3)  # transcribed during the pause
    m.mark("end_of_turn", 10.5)
    d = m.as_dict()
    assert d["stt_ms"] == 0.0
    assert d["at_transcript_final_ms"] == 300.0 and d["at_end_of_turn_ms"] == 500.0
