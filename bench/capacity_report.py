"""The latency report's capacity table: per count of sessions speaking at once, what the server
admitted, what it refused up front (``busy``), and how the admitted sessions fared.

Issue #15's acceptance reads from it: with 8 sessions, every turn is answered within the limit
or its session was refused with ``busy`` up front; no turn is silently late.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .report import _v2v, fmt, pct
from .speed_probe import DRIFT, drifted

if TYPE_CHECKING:
    from .latency import ModeResult, RunResult

TURN_LIMIT_S = 30.0
"""A turn whose first agent audio (and its metrics) has not come within this is late: failed."""


def server_frame_gaps(run: RunResult) -> int:
    """Frame-arrival gaps > 200 ms in the admitted sessions' replies that the client's own frozen
    loop does not explain: made on the server's side of the loopback. Every turn counts, a late
    one too (its reply may have started before the limit)."""
    return sum(len(t.stall_spans) - t.stalls_client_frozen for t in run.turns)


def cpu_per_turn(run: RunResult) -> float | None:
    """Server CPU seconds over the run per turn answered (idle listening included)."""
    answered = sum(1 for t in run.turns if t.ok)
    return round(run.server_cpu_s / answered, 1) if answered else None


def verdict(run: RunResult) -> str:
    """Whether the run meets the acceptance: each turn answered, or its session refused."""
    late = sum(1 for t in run.turns if not t.ok)
    if late == 0 and run.turns:
        return "every turn answered"
    if not run.turns:
        return "no session admitted" if run.refused else "no turns"
    return f"**{late} late or failed**"


def capacity_rows(modes: list[ModeResult]) -> list[str]:
    rows = [f"| mode | sessions at once | capacity | admitted | refused (busy) | refusal time "
            f"(median) | turns answered within {TURN_LIMIT_S:g} s | p50 | p95 | frame gaps > "
            f"200 ms made by the server | server CPU s/turn | peak load | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in modes:
        for r in m.runs:
            v2v = [t.v2v_ms for t in r.turns if t.ok and t.v2v_ms is not None]
            answered = sum(1 for t in r.turns if t.ok)
            refused_ms = pct([o.refused_ms for o in r.ops if o.refused_ms is not None], 50)
            load = "—" if r.load_max is None else f"{r.load_max:.2f}"
            rows.append(
                f"| {m.mode} | {r.sessions} | {r.capacity if r.capacity is not None else '—'} "
                f"| {r.sessions - r.refused} | {r.refused} | {fmt(refused_ms, ' ms')} "
                f"| {answered}/{len(r.turns)} | {fmt(pct(v2v, 50), ' ms')} "
                f"| {fmt(pct(v2v, 95), ' ms')} | {server_frame_gaps(r)} "
                f"| {fmt(cpu_per_turn(r), ' s')} | {load} | {verdict(r)} |")
    return rows


def scaling_rows(modes: list[ModeResult]) -> list[str]:
    """Each count of sessions against one session of the same mode and server (issue #15's
    bar: four at once within 2x of one session's p50 at the median, 3x at the p95), with the
    machine's speed around each run: a ratio across a change of speed measures the host."""
    rows = ["| mode | sessions at once | p50 / 1-session p50 | p95 / 1-session p50 "
            "| CPU probe before → after (ms) | machine as fast as in the 1-session run |",
            "|---|---|---|---|---|---|"]
    for m in modes:
        one = next((r for r in m.runs if r.sessions == 1), None)
        if one is None or not (base := pct(_v2v(one), 50)):
            continue
        for r in m.runs:
            if r.sessions == 1:
                continue
            v2v = _v2v(r)
            p50, p95 = pct(v2v, 50), pct(v2v, 95)
            probe = ", ".join(" → ".join(f"{p:g}" for p in pair)
                              for pair in _pairs(r.cpu_probe_ms)) or "—"
            rows.append(f"| {m.mode} | {r.sessions} | {_ratio(p50, base)} | {_ratio(p95, base)} "
                        f"| {probe} | {_same_speed(one, r)} |")
    return rows if len(rows) > 2 else []


def _pairs(probes: list[float]) -> list[list[float]]:
    """A run's probes, one before/after pair per round."""
    return [probes[i:i + 2] for i in range(0, len(probes), 2)]


def _same_speed(one: RunResult, run: RunResult) -> str:
    """Whether the machine ran as fast as for the 1-session run: per round when the counts of
    sessions took turns (``--rounds``), each round against its own 1-session run. (No ratio
    per round: a round goes on through the questions, so one round's single session asks the
    short ones and the next the long ones, while the sessions at once mix them.)"""
    if not (run.cpu_probe_ms and one.cpu_probe_ms):
        return "—"
    if run.rounds > 1 and one.rounds == run.rounds:
        same = sum(not drifted(a, b) for a, b in zip(_pairs(one.cpu_probe_ms),
                                                      _pairs(run.cpu_probe_ms)))
        return f"{same} of {run.rounds} rounds (interleaved with the 1-session runs)"
    if drifted(one.cpu_probe_ms, run.cpu_probe_ms):
        return f"**no** (probes > {DRIFT:.0%} apart)"
    return "yes"


def _ratio(value: float | None, base: float) -> str:
    return "—" if value is None else f"{value / base:.2f}×"


def round_rows(modes: list[ModeResult]) -> list[str]:
    """Voice-to-voice of each session's first turn (all sessions start speaking at the same
    moment) against their later turns (by then the sessions have drifted apart): the first round
    is the worst case the p95 is made of."""
    rows = ["| mode | sessions at once | first turns: answered | p50 | max | later turns: answered "
            "| p50 | p95 |", "|---|---|---|---|---|---|---|---|"]
    for m in modes:
        for r in m.runs:
            if r.sessions < 2:
                continue
            first = [t for t in r.turns if t.index == 0]
            later = [t for t in r.turns if t.index > 0]
            v1 = [t.v2v_ms for t in first if t.ok and t.v2v_ms is not None]
            v2 = [t.v2v_ms for t in later if t.ok and t.v2v_ms is not None]
            rows.append(f"| {m.mode} | {r.sessions} | {len(v1)}/{len(first)} "
                        f"| {fmt(pct(v1, 50), ' ms')} | {fmt(max(v1, default=None), ' ms')} "
                        f"| {len(v2)}/{len(later)} | {fmt(pct(v2, 50), ' ms')} "
                        f"| {fmt(pct(v2, 95), ' ms')} |")
    return rows if len(rows) > 2 else []


EXPLANATION = (
    "Each count of sessions connects at once and speaks at once (the worst case). The server "
    "runs with its own capacity (`server.max_sessions`: its default, `--config`, or "
    "`VOICE_AGENT_SERVER__MAX_SESSIONS` in the bench's environment); a session beyond it gets "
    "`busy` as its first message and is counted as **refused**, not as failed turns "
    "(refusal time: socket open → the refusal). Turns count for admitted sessions only: "
    f"**answered** = first agent audio and the turn's metrics within {TURN_LIMIT_S:g} s of the "
    "end of speech; p50/p95 are voice-to-voice over answered turns. **Frame gaps made by the "
    "server**: no audio frame for > 200 ms inside a reply, less those the client's own frozen "
    "loop explains (see *Stalls*). **Server CPU s/turn**: the server process's CPU over the run "
    "/ turns answered. **Peak load**: the highest `load` /v3/health reported (every 0.5 s). "
    "Verdict: every turn answered or its session refused up front; anything else is a turn "
    "silently late.")
