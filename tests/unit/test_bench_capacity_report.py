"""The latency bench's capacity table: per count of sessions at once, refused sessions apart from
failed turns, answered turns, frame gaps made by the server, CPU per turn (issue #15, item 5)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytest

from bench.capacity_report import (
    capacity_rows, cpu_per_turn, round_rows, scaling_rows, server_frame_gaps, verdict)
from bench.client import TurnResult
from bench.latency import ModeResult, RunResult, SessionOps
from bench.report import render_report, v2v_rows
from bench.speech_set import SpeechItem
from voice_agent.cli import build_parser
from voice_agent.core.config import V3Config


def turn(v2v: float | None, *, stalls: int = 0, client_frozen: int = 0) -> TurnResult:
    spans = [(float(i), i + 0.3) for i in range(stalls)]
    return TurnResult(question="q", ok=v2v is not None, error="" if v2v else "timeout",
                      v2v_ms=v2v, stall_spans=spans, stalls_client_frozen=client_frozen)


def run(sessions: int, capacity: int, turns: list[TurnResult], *, cpu_s: float,
        load: float) -> RunResult:
    admitted = min(sessions, capacity)
    ops = [SessionOps() for _ in range(admitted)]
    ops += [SessionOps(refused="busy", refused_ms=4.0 + i) for i in range(sessions - admitted)]
    return RunResult(mode="streaming", sessions=sessions, turns=turns, ops=ops,
                     server_cpu_s=cpu_s, capacity=capacity, load_max=load)


def runs() -> list[RunResult]:
    return [
        run(1, 2, [turn(1800), turn(2000)], cpu_s=20.0, load=0.5),
        run(2, 2, [turn(3000), turn(4000, stalls=2, client_frozen=1), turn(5000), turn(6000)],
            cpu_s=40.0, load=1.0),
        # 4 and 8 at once with capacity 2: 2 and 6 refused, their turns never asked.
        run(4, 2, [turn(3100), turn(4100), turn(5100), turn(None, stalls=1)], cpu_s=36.0,
            load=1.0),
        run(8, 2, [turn(3200), turn(4200), turn(5200), turn(6200)], cpu_s=40.0, load=1.0),
    ]


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def test_refused_sessions_are_counted_apart_from_failed_turns() -> None:
    rows = capacity_rows([ModeResult(mode="streaming", runs=runs())])
    assert "refused (busy)" in rows[0] and "turns answered within 30 s" in rows[0]
    by_sessions = {cells(r)[1]: cells(r) for r in rows[2:]}
    # mode, sessions, capacity, admitted, refused, refusal time, answered, p50, p95, gaps,
    # CPU/turn, peak load, verdict
    assert by_sessions["1"][2:7] == ["2", "1", "0", "—", "2/2"]
    assert by_sessions["8"][2:7] == ["2", "2", "6", "6.5 ms", "4/4"]
    assert by_sessions["8"][12] == "every turn answered"
    assert by_sessions["4"][3:7] == ["2", "2", "4.5 ms", "3/4"]
    assert by_sessions["4"][12] == "**1 late or failed**"
    assert by_sessions["2"][7:9] == ["4500 ms", "5850 ms"]
    assert by_sessions["2"][9] == "1"  # 2 gaps, 1 of them the client's own frozen loop
    assert by_sessions["2"][10:12] == ["10 s", "1.00"]
    assert by_sessions["4"][9] == "1"  # a late turn's gap counts too


def test_the_v2v_table_counts_admitted_sessions_turns_only() -> None:
    rows = v2v_rows([ModeResult(mode="streaming", runs=runs())])
    row8 = next(cells(r) for r in rows if cells(r)[1] == "8")
    assert row8[2] == "4/4"  # not 4/16: the 6 refused sessions asked nothing


def test_figures() -> None:
    r = runs()[2]
    assert server_frame_gaps(r) == 1 and cpu_per_turn(r) == 12.0 and r.refused == 2
    assert cpu_per_turn(run(8, 2, [turn(None)], cpu_s=5.0, load=1.0)) is None
    assert verdict(run(2, 0, [], cpu_s=0.0, load=1.0)) == "no session admitted"


def test_report_has_the_capacity_section(tmp_path: Path) -> None:
    samples = np.zeros(4800, np.int16)
    items = [SpeechItem("What is two plus two?", tmp_path / "q.wav", samples, 0.4)]
    args = argparse.Namespace(turns=2, stt_model=None, llm_model=None)
    text = render_report([ModeResult(mode="streaming", runs=runs())], [88.0, 89.0], items,
                         args=args, started=time.time(), config=V3Config())
    section = text.split("## Sessions at once: capacity and admission", 1)[1].split("\n## ", 1)[0]
    assert "| streaming | 8 | 2 | 2 | 6 |" in section
    assert "counted as **refused**, not as failed turns" in section
    assert "- Capacity: the server's own `server.max_sessions` = 2;" in text


def test_first_turns_are_reported_apart_from_later_ones() -> None:
    """The first round (all sessions speaking at the same moment) against the later turns."""
    turns = [turn(5000), turn(2000), turn(3000), turn(6000), turn(2500), turn(None)]
    for i, t in enumerate(turns):
        t.index = i % 3  # two sessions of three turns
    rows = round_rows([ModeResult(mode="streaming", runs=[
        run(1, 2, [turn(1800)], cpu_s=1.0, load=0.5),
        run(2, 2, turns, cpu_s=10.0, load=1.0)])])
    assert len(rows) == 3  # header, rule, the 2-session run only (one session has no rounds)
    assert cells(rows[2]) == ["streaming", "2", "2/2", "5500 ms", "6000 ms", "3/4", "2500 ms",
                              "2950 ms"]


def test_each_count_of_sessions_is_set_against_one_session_with_the_machines_speed() -> None:
    rs = runs()
    rs[0].cpu_probe_ms = [10.0, 10.4]
    rs[1].cpu_probe_ms = [10.2, 10.9]  # within 10% of the 1-session run's probes
    rs[2].cpu_probe_ms = [10.1, 14.0]  # the host slowed down during the run
    rows = scaling_rows([ModeResult(mode="streaming", runs=rs)])
    by_sessions = {cells(r)[1]: cells(r) for r in rows[2:]}
    assert "1" not in by_sessions  # the baseline itself
    # 1 session p50 1900 ms; 2 at once p50 4500, p95 5850 ms
    assert by_sessions["2"][2:6] == ["2.37×", "3.08×", "10.2 → 10.9", "yes"]
    assert by_sessions["4"][4:6] == ["10.1 → 14", "**no** (probes > 10% apart)"]
    assert by_sessions["8"][5] == "—"  # not probed
    assert scaling_rows([ModeResult(mode="streaming", runs=rs[1:])]) == []  # no 1-session run


def test_the_probe_is_a_fixed_workload_whose_time_follows_the_cpu() -> None:
    from bench.speed_probe import cpu_probe_ms, drifted

    small, large = cpu_probe_ms(rounds=3, n=20_000), cpu_probe_ms(rounds=3, n=200_000)
    assert 0 < small < large  # ten times the work takes longer on any machine
    assert not drifted([10.0], [10.9]) and drifted([10.0], [11.1]) and not drifted([], [])


def rounds_of(sessions: int, v2v_by_round: list[list[float]], probes: list[list[float]],
              cpu_s: float = 10.0) -> list[RunResult]:
    out = []
    for k, (v2v, probe) in enumerate(zip(v2v_by_round, probes)):
        turns = [turn(v) for v in v2v]
        for i, t in enumerate(turns):
            t.index, t.round = i, k
        r = run(sessions, 4, turns, cpu_s=cpu_s, load=0.25 * sessions)
        r.cpu_probe_ms, r.wall_s, r.other_cores = probe, 10.0 * (k + 1), 0.1 * k
        r.server_loop_lag_max_ms = 50.0 + k
        out.append(r)
    return out


def test_rounds_of_one_count_of_sessions_merge_into_one_run() -> None:
    """--rounds: every turn of every round, summed time and CPU, the worst lag, and the
    sessions refused counted once per round (each round asks for the same sessions)."""
    eight = [run(8, 4, [turn(3000)], cpu_s=5.0, load=1.0), run(8, 4, [turn(4000)], cpu_s=7.0,
                                                               load=0.9)]
    eight[0].server_loop_lag_max_ms, eight[1].server_loop_lag_max_ms = 120.0, None
    merged = RunResult.merged(eight)
    assert merged.rounds == 2 and merged.sessions == 8 and len(merged.turns) == 2
    assert merged.refused == 4 and len(merged.ops) == 16
    assert merged.server_cpu_s == 12.0 and merged.load_max == 1.0
    assert merged.server_loop_lag_max_ms == 120.0
    rs = rounds_of(1, [[1000, 1200], [2000, 2200]], [[10.0, 10.2], [15.0, 15.1]])
    one = RunResult.merged(rs)
    assert [t.round for t in one.turns] == [0, 0, 1, 1]
    assert one.cpu_probe_ms == [10.0, 10.2, 15.0, 15.1] and one.wall_s == 30.0
    assert one.other_cores == round((0.0 * 10 + 0.1 * 20) / 30, 2)


def test_interleaved_rounds_are_checked_for_speed_round_by_round() -> None:
    """A host that slowed down between rounds: the ratio is over every round's turns, and the
    speed check pairs each round with its own 1-session run, not the whole runs."""
    one = RunResult.merged(rounds_of(1, [[1000, 1000], [2000, 2000]],
                                     [[10.0, 10.2], [15.0, 15.2]]))
    four = RunResult.merged(rounds_of(4, [[1800, 2000, 2200, 2600], [3600, 4000, 4400, 5200]],
                                      [[10.1, 10.3], [15.1, 18.0]]))
    rows = scaling_rows([ModeResult(mode="streaming", runs=[one, four])])
    row = cells(rows[2])
    assert row[1] == "4"
    # merged: 1-session p50 1500; 4 at once p50 3100
    assert row[2] == "2.07×"
    assert row[3] == "3.28×"  # p95 4920 ms of the merged turns
    assert row[4] == "10.1 → 10.3, 15.1 → 18"
    assert row[5] == "1 of 2 rounds (interleaved with the 1-session runs)"


def test_the_report_names_the_rounds(tmp_path: Path) -> None:
    samples = np.zeros(4800, np.int16)
    items = [SpeechItem("What is two plus two?", tmp_path / "q.wav", samples, 0.4)]
    args = argparse.Namespace(turns=2, rounds=3, stt_model=None, llm_model=None)
    text = render_report([ModeResult(mode="streaming", runs=runs())], [88.0, 89.0], items,
                         args=args, started=time.time(), config=V3Config())
    assert "2 turns per session, cycled, in 3 rounds" in text


def test_rounds_must_be_a_whole_number_of_one_or_more(capsys) -> None:
    """`bench latency --rounds` refuses 0, negatives and words with a usage error."""
    args = build_parser().parse_args(["bench", "latency", "--rounds", "3"])
    assert args.rounds == 3
    assert build_parser().parse_args(["bench", "latency"]).rounds == 1
    for bad, says in (("0", "must be 1 or more, not 0"), ("-2", "must be 1 or more, not -2"),
                      ("two", "not a whole number: 'two'")):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["bench", "latency", "--rounds", bad])
        assert exit_.value.code == 2 and says in capsys.readouterr().err
