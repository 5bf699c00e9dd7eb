"""bench pauses' scoring, statistics and tables (no models, no audio engines, no server)."""

from __future__ import annotations

import argparse

import av
import numpy as np
import pytest

from bench.pauses import Run, WatchingRecorder, joined, parse_env, render_report, trim
from bench.pauses_set import (PAUSES_S, SPLITS, CompleteTurn, SplitTurn, complete_questions,
                              complete_rows, from_metrics, has_second_half, judge_split,
                              pause_for, second_half_words, split_failure_rows, split_rows,
                              summarise_complete, summarise_split, verdict)
from bench.speech_set import LEAD_S, RATE, TRAIL_S, speech_end_s

END = 100.0  # the end of the speech sent, monotonic seconds


def _split(first: str = "What is the largest city in", second: str = "Canada?",
           pause: float = 1.0, ok: bool = True) -> SplitTurn:
    return SplitTurn("v", first, second, pause, ok=ok)


def _ev(kind: str, at: float, text: str = "", final: bool = True) -> dict:
    return {"type": kind, "_at": at, "text": text, "final": final}


def test_the_sets_are_big_enough_and_every_second_half_has_its_own_words() -> None:
    assert len(SPLITS) >= 20 and len(complete_questions()) >= 20
    assert all(". " not in q for q in complete_questions())
    for first, second in SPLITS:
        assert second_half_words(first, second), (first, second)
    assert [pause_for(i) for i in range(5)] == [*PAUSES_S, PAUSES_S[0]]


def test_second_half_words_drop_function_words_and_the_first_halfs_words() -> None:
    assert second_half_words("Can you tell me", "how far away the moon is?") == \
        ["far", "away", "moon"]
    assert second_half_words("What is seven times", "eight?") == ["eight"]


def test_has_second_half_wants_half_of_the_key_words() -> None:
    a, b = "Can you tell me", "how far away the moon is?"
    assert has_second_half("Can you tell me how far away the moon is?", a, b)
    assert has_second_half("Can you tell me how far away the mood is?", a, b)  # 2 of 3
    assert not has_second_half("Can you tell me how far?", a, b)  # 1 of 3
    assert not has_second_half("Can you tell me?", a, b)
    assert has_second_half("What is seven times 8?", "What is seven times", "eight?")


def test_a_whole_transcript_after_the_end_passes() -> None:
    t = judge_split(_split(), [_ev("transcript", END - 1.5, "What is", final=False),
                               _ev("transcript", END + 0.4, "What is the largest city in Canada?"),
                               _ev("ai_response", END + 1.0, "Toronto.")], END, None)
    assert t.passed and not t.first_half_answered
    assert t.transcript_after_ms == 400 and t.reply == "Toronto."


def test_a_first_final_transcript_of_the_first_half_fails() -> None:
    t = judge_split(_split(), [_ev("transcript", END - 0.9, "What is the largest city in?"),
                               _ev("transcript", END + 0.4, "What is the largest city in Canada?")],
                    END, None)
    assert t.first_half_answered and not t.passed
    assert t.reasons == ["final transcript 900 ms before the end"]
    assert t.transcript_after_ms == -900


def test_a_final_after_the_question_that_lacks_its_words_is_misheard_not_cut() -> None:
    t = judge_split(_split(), [_ev("transcript", END + 2.0, "What is the largest city in Gonad?")],
                    END, None)
    assert t.passed and not t.first_half_answered and t.misheard


def test_reply_text_or_audio_before_the_end_fails() -> None:
    whole = _ev("transcript", END + 0.3, "What is the largest city in Canada?")
    t = judge_split(_split(), [whole, _ev("ai_response", END - 0.2, "The", final=False)], END,
                    None)
    assert t.reasons == ["reply text 200 ms before the end"]
    t = judge_split(_split(), [whole], END, END - 0.5)
    assert t.reasons == ["agent audio 500 ms before the end"]


def test_a_failed_turn_is_no_first_half_answer_and_no_pass() -> None:
    t = judge_split(_split(ok=False), [], END, None)
    assert not t.first_half_answered and not t.passed
    s = summarise_split([t, judge_split(_split(), [_ev("transcript", END + .3, "Canada")], END,
                                        None)])
    assert (s.turns, s.passed, s.first_half, s.failed) == (2, 1, 0, 1)
    assert s.pass_rate == 0.5


def test_complete_turns_from_metrics_and_their_summary() -> None:
    turns = [from_metrics(CompleteTurn("v", "q", ok=True, v2v_ms=v),
                          {"end_of_turn_delay_ms": e, "preemptive": p})
             for e, p, v in ((250.0, True, 900.0), (260.0, False, 1000.0),
                             (500.0, False, 1500.0), (None, False, 1100.0))]
    s = summarise_complete(turns)
    assert (s.turns, s.measured, s.preemptive) == (4, 3, 1)
    assert s.p50 == 260.0 and s.early == pytest.approx(2 / 3)
    assert s.p90 == pytest.approx(452.0)
    assert s.v2v_p50 == 1050.0


def test_verdict_against_the_issues_targets() -> None:
    ok = [judge_split(_split(), [_ev("transcript", END + .3, "Canada")], END, None)] * 19
    bad = judge_split(_split(), [_ev("transcript", END - 1, "What is")], END, None)
    fast = [from_metrics(CompleteTurn("v", "q"), {"end_of_turn_delay_ms": 250})] * 3
    slow = [from_metrics(CompleteTurn("v", "q"), {"end_of_turn_delay_ms": 500})] * 3
    assert all("PASS" in line for line in verdict(ok + [bad], fast))  # 19/20 = 95%
    lines = verdict(ok[:18] + [bad, bad], fast + slow * 2)
    assert all("FAIL" in line for line in lines) and len(lines) == 2
    assert verdict([], []) == ["- nothing measured"]


def test_tables_have_a_row_per_voice_and_one_for_all() -> None:
    a = judge_split(_split(pause=0.8), [_ev("transcript", END - 1, "What is")], END, None)
    b = judge_split(_split(pause=1.5), [_ev("transcript", END + .3, "Canada")], END, None)
    rows = split_rows({"x": [a], "y": [b]})
    assert len(rows) == 5 and rows[2].startswith("| x | 1 | 0 (0%) | 1 | 0 | 1 / 0 / 0 / 0 |")
    assert rows[-1].startswith("| **all** | 2 | 1 (50%) | 1 |")
    rows = complete_rows({"x": [from_metrics(CompleteTurn("x", "q"),
                                             {"end_of_turn_delay_ms": 250})]})
    assert rows[-1] == "| **all** | 1 (1) | 250 ms | 250 ms | 100% | 0 | — |"
    assert len(split_failure_rows([a, b])) == 3 and split_failure_rows([b]) == ["No failures."]


def test_trim_and_join_keep_the_pause_exact() -> None:
    tone = (8000 * np.sin(np.arange(RATE // 2) / 5)).astype(np.int16)
    pad = np.zeros(RATE // 4, np.int16)
    half = trim(np.concatenate([pad, tone, pad]))
    assert abs(len(half) - len(tone)) <= RATE // 100  # within one 10 ms window
    out = joined(half, half, 1.2)
    assert len(out) == int(RATE * LEAD_S) + 2 * len(half) + int(RATE * 1.2) + int(RATE * TRAIL_S)
    assert speech_end_s(out) == pytest.approx(LEAD_S + 2 * len(half) / RATE + 1.2, abs=0.01)


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    assert parse_env(None) == {}
    with pytest.raises(ValueError):
        parse_env(["nope"])


def test_the_report_renders() -> None:
    run = Run(["v"], split={"v": [judge_split(_split(), [], END, None)]},
              complete={"v": [CompleteTurn("v", "q", ok=True)]},
              env={"VOICE_AGENT_PIPELINE__PREEMPTIVE_REPLY": "false"})
    text = render_report(run, argparse.Namespace(server_src=None), started=0.0, commit="abc")
    assert "PREEMPTIVE_REPLY=false" in text and "## Verdict" in text and "| v | q |" in text


def _frame(level: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.full((1, 960), level, np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate = RATE
    return frame


def test_the_recorder_notes_the_first_loud_frame_after_watch_only() -> None:
    rec = WatchingRecorder()
    rec._on_frame(_frame(5000), 1.0)  # not watching yet
    assert rec.first_loud_at is None
    rec.watch(2.0)
    rec._on_frame(_frame(5000), 1.5)  # before the turn began
    rec._on_frame(_frame(10), 2.1)  # decoded silence
    assert rec.first_loud_at is None
    rec._on_frame(_frame(5000), 2.2)
    rec._on_frame(_frame(5000), 2.3)
    assert rec.first_loud_at == 2.2 and rec.frames == 5
    rec.watch(3.0)
    assert rec.first_loud_at is None
