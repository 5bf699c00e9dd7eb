"""The soak's markdown report (docs/reliability.md) and its console verdicts."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections import Counter
from typing import TYPE_CHECKING

from .report import _git, _machine, fmt, pct

if TYPE_CHECKING:
    from voice_agent.core.config import V3Config

    from .soak import PhaseResult, Sample, ServerRun, SessionRecord
    from .speech_set import SpeechItem

GROWTH_LIMIT_MB = 50.0


def _mb(kb: int | None) -> str:
    return "—" if not kb else f"{kb / 1024:.0f} MB"


def _growth_mb(a: Sample | None, b: Sample | None) -> float | None:
    return None if a is None or b is None else round((b.rss_kb - a.rss_kb) / 1024, 1)


def _signed(mb: float | None) -> str:
    return "—" if mb is None else f"{mb:+.1f} MB"


def _reasons(sessions: list[SessionRecord]) -> str:
    c = Counter(r for s in sessions if not s.ok for r in (s.all_reasons() or ["no turn"]))
    return "; ".join(f"{r} ×{n}" for r, n in c.most_common()).replace("|", "/") or "none"


def _v2v(sessions: list[SessionRecord], kind: str | None = None) -> list[float]:
    return [t.v2v_ms for s in sessions for t in s.turns
            if t.ok and t.v2v_ms is not None and (kind is None or t.kind == kind)]


def _overall(run: ServerRun) -> tuple[Sample | None, Sample | None, float | None]:
    """Memory after the first phase's warm-up → after the last phase, and the growth."""
    if not run.phases:
        return None, None, None
    a, b = run.phases[0].start, run.phases[-1].end
    return a, b, _growth_mb(a, b)


def _phase_growths(run: ServerRun) -> list[float | None]:
    return [_growth_mb(p.start, p.end) for p in run.phases]


def _met(run: ServerRun) -> bool:
    ss = [s for p in run.phases for s in p.sessions]
    grow = _phase_growths(run)
    return (not run.error and bool(ss) and all(s.ok for s in ss)
            and all(p.left_sessions == 0 for p in run.phases)
            and all(g is not None and g < GROWTH_LIMIT_MB for g in grow))


def _left(n: int | None) -> str:
    return "?" if n is None else str(n)


def verdicts(runs: list[ServerRun]) -> list[str]:
    out = []
    for r in runs:
        sessions = [s for p in r.phases for s in p.sessions]
        grow = ", ".join(f"{p.name} {_signed(g)}" for p, g in zip(r.phases, _phase_growths(r)))
        out.append(f"[{r.label}] {'PASS' if _met(r) else 'FAIL'}: {len(sessions)} sessions, "
                   f"{sum(not s.ok for s in sessions)} failed, sessions left "
                   f"{[p.left_sessions for p in r.phases]}, RSS growth after warm-up: {grow} "
                   f"(limit {GROWTH_LIMIT_MB:.0f} MB); whole run {_signed(_overall(r)[2])}"
                   f"{'; error: ' + r.error if r.error else ''}")
    return out


def _summary_rows(runs: list[ServerRun]) -> list[str]:
    rows = ["| server run | STT / LLM | sessions | failed sessions | turns (failed) "
            "| sessions left at end | RSS growth after warm-up, per phase "
            "| RSS first warm-up → end of run | peak RSS (VmHWM) | target met |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ss = [s for p in r.phases for s in p.sessions]
        turns = [t for s in ss for t in s.turns]
        a, b, g = _overall(r)
        left = r.phases[-1].left_sessions if r.phases else None
        grow = "; ".join(f"{p.name} {_signed(x)}" for p, x in zip(r.phases, _phase_growths(r)))
        rows.append(f"| {r.label} | {r.stt} / {r.llm} | {len(ss)} | {sum(not s.ok for s in ss)} "
                    f"| {len(turns)} ({sum(not t.ok for t in turns)}) | {_left(left)} | {grow or '—'} "
                    f"| {_mb(a.rss_kb if a else None)} → {_mb(b.rss_kb if b else None)} "
                    f"({_signed(g)}) | {_mb(r.hwm_kb)} | {'yes' if _met(r) else '**no**'}"
                    f"{' (' + r.error + ')' if r.error else ''} |")
    return rows


def _phase_rows(runs: list[ServerRun], name: str) -> list[str]:
    rows = ["| server run | STT / LLM | planned | sessions | failed | failure reasons | turns "
            "| v2v p50 | v2v p95 | v2v max | wall | sessions left |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for p in (p for p in r.phases if p.name == name):
            v = _v2v(p.sessions)
            turns = sum(len(s.turns) for s in p.sessions)
            rows.append(f"| {r.label} | {r.stt} / {r.llm} | {p.planned} | {len(p.sessions)} "
                        f"| {sum(not s.ok for s in p.sessions)} | {_reasons(p.sessions)} | {turns} "
                        f"| {fmt(pct(v, 50), ' ms')} | {fmt(pct(v, 95), ' ms')} "
                        f"| {fmt(max(v) if v else None, ' ms')} | {p.wall_s:.0f} s "
                        f"| {_left(p.left_sessions)} |")
    return rows


def _resource_rows(runs: list[ServerRun], name: str) -> list[str]:
    rows = ["| server run | RSS at phase start | RSS after warm-up | RSS at end | growth after warm-up "
            "| peak RSS (sampled) | open fds start → end | load (1 min) start → end | server CPU "
            "| other processes' CPU (cores) | event-loop lag p99 / max, worst minute: server · "
            "client |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for p in (p for p in r.phases if p.name == name):
            warm = (f" ({p.warmup} cycles)" if p.warmup else " (every worker had a turn)"
                    if name == "concurrent" else "")
            begin = p.at_begin.rss_kb if p.at_begin else None
            fds = (f"{p.at_begin.fds if p.at_begin else '—'} → {p.end.fds if p.end else '—'}")
            load = " → ".join(str(x) for x in p.load)
            rows.append(f"| {r.label} | {_mb(begin)} | {_mb(p.start.rss_kb if p.start else None)}"
                        f"{warm} | {_mb(p.end.rss_kb if p.end else None)} "
                        f"| {_signed(_growth_mb(p.start, p.end))} | {_mb(p.peak_rss_kb)} | {fds} "
                        f"| {load} | {p.server_cpu_s:.0f} s | {p.other_cores} | {_lag(p)} |")
    return rows


def _lag(p: PhaseResult) -> str:
    """Worst 1-minute p99 and max of each loop over the phase's samples."""
    def worst(values: list[float | None]) -> str:
        seen = [v for v in values if v is not None]
        return f"{max(seen):.0f}" if seen else "—"

    s = p.loop_lag
    return (f"{worst([x.server_p99 for x in s])} / {worst([x.server_max for x in s])} ms · "
            f"{worst([x.client_p99 for x in s])} / {worst([x.client_max for x in s])} ms")


def _kind_rows(runs: list[ServerRun]) -> list[str]:
    rows = ["| server run | session kind | sessions | turns ok | v2v p50 | v2v p95 | v2v max |",
            "|---|---|---|---|---|---|---|"]
    for r in runs:
        for p in (p for p in r.phases if p.name == "concurrent"):
            for kind in ("cycle", "persistent"):
                ss = [s for s in p.sessions if s.kind == kind]
                ts = [t for s in ss for t in s.turns]
                v = _v2v(ss, kind)
                rows.append(f"| {r.label} | {kind} | {len(ss)} | {sum(t.ok for t in ts)}/{len(ts)} "
                            f"| {fmt(pct(v, 50), ' ms')} | {fmt(pct(v, 95), ' ms')} "
                            f"| {fmt(max(v) if v else None, ' ms')} |")
    return rows


def _timeline(run: ServerRun, points: int = 12) -> str:
    """RSS at evenly spaced samples: a leak shows as a steady climb."""
    s = run.samples
    if not s:
        return f"- {run.label}: no samples"
    idx = sorted({round(i * (len(s) - 1) / (points - 1)) for i in range(points)})
    pts = ", ".join(f"{s[i].t:.0f} s {s[i].rss_kb / 1024:.0f} MB/{s[i].fds} fds" for i in idx)
    return f"- {run.label} ({len(s)} samples): {pts}"


def _failures(runs: list[ServerRun], limit: int = 20) -> list[str]:
    out = []
    for r in runs:
        for p in r.phases:
            for i, s in enumerate(p.sessions):
                if not s.ok:
                    qs = "; ".join(t.question for t in s.turns if not t.ok)
                    out.append(f"- {r.label}, {p.name} session {i + 1} ({s.kind}, {s.wall_s:.1f} s): "
                               f"{', '.join(s.all_reasons()) or 'no turn'}{' — ' + qs if qs else ''}")
        if r.error:
            out.append(f"- {r.label}: run aborted: {r.error}")
    return (out[:limit] + [f"- … and {len(out) - limit} more"] if len(out) > limit else out) or ["None."]


def render_report(runs: list[ServerRun], items: list[SpeechItem], *, args: argparse.Namespace,
                  started: float, config: V3Config) -> str:
    cmd = "voice-agent " + " ".join(sys.argv[1:]) if sys.argv[1:] else "voice-agent bench soak"
    when = dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    loads = [p.load for r in runs for p in r.phases]
    load_line = ", ".join(" → ".join(str(x) for x in ld) for ld in loads) or "—"
    models = "; ".join(f"{r.label}: STT whisper `{r.stt}`, LLM `{r.llm}`" for r in runs)
    return "\n".join([
        "# Reliability (soak)", "",
        "Written by `voice-agent bench soak` (bench/soak.py); every run overwrites this page.", "",
        f"- Command: `{cmd}`",
        f"- Date: {when}; git commit {_git()}",
        f"- Machine: {_machine()}; no GPU; load average (1/5/15 min) at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}; 1-minute load per phase start → end: "
        f"{load_line}",
        f"- Models: {models}; TTS `{config.voice.provider}` `{config.voice.voice}`; LLM max "
        f"{config.ai.max_tokens} tokens, timeout {config.ai.timeout_s:g} s; pipeline `streaming`",
        f"- Input: {len(items)} espeak-ng questions at 48 kHz, rotated; a turn fails after "
        f"{args.turn_timeout:g} s; server RSS and fds sampled every {args.sample_every:g} s",
        f"- Targets: zero failed sessions, 0 sessions left in /v3/sessions, server RSS growth under "
        f"{GROWTH_LIMIT_MB:.0f} MB after warm-up", "",
        "## How it is measured",
        "The server runs as a subprocess (`voice-agent serve` on 127.0.0.1, a free port, ICE on "
        "127.0.0.1 only), one per model set. Each session is a real aiortc client (bench/client.py). "
        "**Phase 1** runs sequential cycles: open /ws/v3, offer/answer, play a question, wait for "
        "the final transcript, a final `ai_response` and loud (> −40 dBFS) agent audio, send `end` "
        "while the reply may still be playing, close, and check the session is gone from "
        "/v3/sessions. **Phase 2** runs concurrent sessions until the time is up: even-numbered "
        "workers cycle as in phase 1, odd-numbered ones stay connected and ask one question after "
        "another, each reply heard to its end (the server's `metrics` event). A session fails on a "
        "connect error, a turn timeout, an `error` event, a missing transcript/reply/audio, or an "
        "`end` that does not close the socket and drop the session within 10 s. v2v = end of "
        "speech sent → first loud agent sample heard. Memory is VmRSS from /proc/PID/status, fds "
        "the count of /proc/PID/fd. Event-loop lag is how late a 50 ms sleep wakes up, over the last "
        "minute, read with each progress line and at the phase's end: the server's from /v3/health, "
        "the client's in this process (every client shares its loop). Growth is counted from the end of each phase's warm-up (phase 1: its first "
        "cycles; phase 2: once every worker has finished one turn, since running several sessions at "
        "once raises the plateau once: more buffers and allocator arenas) to its end, "
        "after all sessions closed plus 3 s.", "",
        "## Summary", *_summary_rows(runs), "",
        "## Phase 1: sequential connect → speak → hear → disconnect", *_phase_rows(runs, "sequential"),
        "", *_resource_rows(runs, "sequential"), "",
        "## Phase 2: concurrent sessions", *_phase_rows(runs, "concurrent"), "",
        *_resource_rows(runs, "concurrent"), "", *_kind_rows(runs), "",
        "## Memory timeline (RSS / open fds of the server)", *(_timeline(r) for r in runs), "",
        "## Failures", *_failures(runs), "",
        "## What this shows / what it doesn't",
        "It shows whether sessions open, answer and close cleanly many times in a row and "
        "several at once on one server, whether the session table drains to zero, and whether the "
        "server's resident memory and descriptor count level off after warm-up instead of "
        "climbing per session. It does not show behaviour over hours or thousands of sessions (a "
        "slow leak of a few KB per session hides in the noise of one run), on real networks "
        "(loss, jitter, NAT, TURN), with browsers, or with clients that vanish without `end`. "
        "RSS also moves with allocator caching and model buffers, so one run's growth is a "
        "bound, not a leak measurement; the machine is shared, so latencies carry other work's "
        "load (see the load figures).", "",
    ])
