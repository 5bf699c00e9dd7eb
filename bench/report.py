"""Figures from the bench results: the console table and the markdown report."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from voice_agent.core.config import V3Config

    from .latency import ModeResult, RunResult
    from .speech_set import SpeechItem

STAGES = (  # server metrics, in the order a turn passes them (pipeline/metrics.py)
    ("end_of_turn_delay_ms", "end of speech → end of turn (VAD silence wait)"),
    ("stt_ms", "end of turn → final transcript"),
    ("llm_first_token_ms", "final transcript → first LLM token"),
    ("first_sentence_ms", "first token → first speakable clause"),
    ("tts_first_audio_ms", "clause → first TTS audio"),
    ("transport_ms", "first TTS audio → first frame sent (server queue)"),
    ("end_of_speech_to_first_audio_ms", "server total: end of speech → first frame sent"),
    ("at_transcript_final_ms", "server timeline: end of speech → final transcript (pause + STT)"),
    ("at_llm_first_token_ms", "server timeline: end of speech → first LLM token"),
    ("at_first_sentence_ms", "server timeline: end of speech → first speakable piece"),
    ("at_tts_first_audio_ms", "server: end of speech → first TTS audio"),
    ("reply_total_ms", "end of speech → whole reply generated"),
)


def pct(values: list[float], q: float) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.percentile(vals, q)), 1) if vals else None


def fmt(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{v:.0f}{unit}" if abs(v) >= 10 else f"{v:.1f}{unit}"


def _v2v(run: RunResult) -> list[float]:
    return [t.v2v_ms for t in run.turns if t.ok and t.v2v_ms is not None]


def _stage(run: RunResult, key: str) -> list[float]:
    return [t.metrics[key] for t in run.turns if t.ok and t.metrics.get(key) is not None]


def _residual(run: RunResult, key: str = "end_of_speech_to_first_audio_ms") -> list[float]:
    """Client v2v − a server span that starts at the server's end of speech."""
    return [t.v2v_ms - t.metrics[key] for t in run.turns
            if t.ok and t.v2v_ms is not None and t.metrics.get(key) is not None]


def _single(modes: list[ModeResult], mode: str) -> RunResult | None:
    for m in modes:
        if m.mode == mode:
            for r in m.runs:
                if r.sessions == 1:
                    return r
    return None


def _mb(kb: dict[str, int], key: str) -> str:
    return f"{kb[key] / 1024:.0f} MB" if key in kb else "—"


def v2v_rows(modes: list[ModeResult]) -> list[str]:
    rows = ["| mode | sessions | turns ok | p50 | p95 | max | mean | server CPU s/turn "
            "| other processes' CPU (cores) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in modes:
        for r in m.runs:
            v = _v2v(r)
            ok = len(v)
            cpu = r.server_cpu_s / ok if ok else None
            mean = round(float(np.mean(v)), 1) if v else None
            rows.append(f"| {m.mode} | {r.sessions} | {ok}/{len(r.turns)} | {fmt(pct(v, 50), ' ms')} "
                        f"| {fmt(pct(v, 95), ' ms')} | {fmt(max(v) if v else None, ' ms')} "
                        f"| {fmt(mean, ' ms')} | {fmt(cpu, ' s')} | {r.other_cores:.2f} |")
    return rows


def ratio_line(modes: list[ModeResult]) -> str:
    s, n = _single(modes, "streaming"), _single(modes, "naive")
    if s is None or n is None or not _v2v(s) or not _v2v(n):
        return "Baseline not run (or no successful turns)."
    p50 = (pct(_v2v(n), 50) or 0) / (pct(_v2v(s), 50) or 1)
    p95 = (pct(_v2v(n), 95) or 0) / (pct(_v2v(s), 95) or 1)
    return (f"Naive baseline / streaming, 1 session: p50 {fmt(pct(_v2v(n), 50))} / "
            f"{fmt(pct(_v2v(s), 50))} ms = **{p50:.2f}×**; p95 {fmt(pct(_v2v(n), 95))} / "
            f"{fmt(pct(_v2v(s), 95))} ms = **{p95:.2f}×**.")


# Issue targets for one session with the default models (docs/latency.md explains the misses).
TARGET_P50_MS, TARGET_P95_MS, TARGET_RATIO = 800.0, 1200.0, 3.0


def target_rows(modes: list[ModeResult]) -> list[str]:
    """Each target, the measured figure, and whether it is met or by how much it is missed."""
    s, n = _single(modes, "streaming"), _single(modes, "naive")
    if s is None or not _v2v(s):
        return ["No streaming run with one session: targets not checked."]

    def row(name: str, value: float | None, goal: float, unit: str, higher_is_better: bool) -> str:
        shown = (lambda v: f"{v:.0f} ms") if unit == "ms" else (lambda v: f"{v:.2f}×")
        if value is None:
            return f"| {name} | {shown(goal)} | not measured | |"
        if (value >= goal) if higher_is_better else (value <= goal):
            verdict = "met"
        elif unit == "ms":
            verdict = f"missed by {value - goal:.0f} ms ({value / goal:.1f}× the goal)"
        else:
            verdict = f"missed ({shown(value)} instead of {shown(goal)})"
        return f"| {name} | {shown(goal)} | {shown(value)} | {verdict} |"

    ratio = None
    if n is not None and _v2v(n):
        ratio = (pct(_v2v(n), 50) or 0) / (pct(_v2v(s), 50) or 1)
    return ["| target (1 session, default models) | goal | measured | verdict |", "|---|---|---|---|",
            row("voice-to-voice p50", pct(_v2v(s), 50), TARGET_P50_MS, "ms", False),
            row("voice-to-voice p95", pct(_v2v(s), 95), TARGET_P95_MS, "ms", False),
            row("naive baseline / streaming (p50)", ratio, TARGET_RATIO, "x", True)]


def stage_rows(modes: list[ModeResult]) -> list[str]:
    runs = [(m.mode, r) for m in modes for r in m.runs]
    head = "| stage (server metrics, median ms) | " + " | ".join(
        f"{mode} ×{r.sessions}" for mode, r in runs) + " |"
    rows = [head, "|---|" + "---|" * len(runs)]
    for key, label in STAGES:
        rows.append(f"| `{key}`: {label} | " + " | ".join(
            fmt(pct(_stage(r, key), 50)) for _, r in runs) + " |")
    rows.append("| client v2v − server total (network both ways + playout position) | " + " | ".join(
        fmt(pct(_residual(r), 50)) for _, r in runs) + " |")
    rows.append("| client v2v − server end of speech → first TTS audio (server queue + both legs) | "
                + " | ".join(fmt(pct(_residual(r, "at_tts_first_audio_ms"), 50)) for _, r in runs) + " |")
    rows.append("| **client voice-to-voice** | " + " | ".join(
        f"**{fmt(pct(_v2v(r), 50))}**" for _, r in runs) + " |")
    rows.append("| transcript from the pause reused (no STT after end of turn) | " + " | ".join(
        f"{sum(1 for t in r.turns if t.metrics.get('transcript_reused'))}/{len(_v2v(r))}"
        for _, r in runs) + " |")
    return rows


def stall_rows(modes: list[ModeResult]) -> list[str]:
    rows = ["| mode | sessions | replies | frame-arrival gaps > 200 ms (of them, made by the "
            "client's own frozen loop) | max frame gap | "
            "silent runs > 200 ms inside replies | their median | server: replies whose audio "
            "ran dry mid-reply (gaps > 200 ms) | longest such gap | worst loop lag: server / "
            "client |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for m in modes:
        for r in m.runs:
            ok = [t for t in r.turns if t.ok]
            gaps = [g for t in ok for g in t.audio_gaps_ms]
            dry = [float(t.metrics.get("playback_gap_max_ms") or 0) for t in ok]
            rows.append(f"| {m.mode} | {r.sessions} | {len(ok)} | {sum(len(t.stall_spans) for t in ok)} "
                        f"({sum(t.stalls_client_frozen for t in ok)}) "
                        f"| {fmt(max((t.max_frame_gap_ms for t in ok), default=None), ' ms')} "
                        f"| {len(gaps)} | {fmt(pct(gaps, 50), ' ms')} "
                        f"| {sum(d > 0 for d in dry)} ({sum(d > 200 for d in dry)}) "
                        f"| {fmt(max(dry, default=None), ' ms')} "
                        f"| {fmt(r.server_loop_lag_max_ms, ' ms')} / "
                        f"{fmt(r.client_loop_lag_max_ms, ' ms')} |")
    return rows


def ops_rows(modes: list[ModeResult]) -> list[str]:
    rows = ["| mode | sessions | connect → connection_established | offer → ICE+DTLS connected "
            "| end → socket closed | end → gone from /v3/sessions | server ICE addresses |",
            "|---|---|---|---|---|---|---|"]
    for m in modes:
        for r in m.runs:
            def med(attr: str) -> str:
                return fmt(pct([getattr(o, attr) for o in r.ops if getattr(o, attr) is not None], 50), " ms")
            ips = sorted({ip for o in r.ops for ip in o.answer_ips})
            rows.append(f"| {m.mode} | {r.sessions} | {med('connect_ms')} | {med('media_ms')} "
                        f"| {med('end_closed_ms')} | {med('end_gone_ms')} | {', '.join(ips) or '—'} |")
    return rows


def http_rows(modes: list[ModeResult]) -> list[str]:
    rows = ["| endpoint | requests | median | p95 |", "|---|---|---|---|"]
    for m in modes:
        for path, times in m.http_ms.items():
            rows.append(f"| GET {path} | {len(times)} | {fmt(pct(times, 50), ' ms')} "
                        f"| {fmt(pct(times, 95), ' ms')} |")
    return rows


def memory_rows(modes: list[ModeResult]) -> list[str]:
    rows = ["| mode | models loaded in | RSS when ready | RSS at the end | peak (VmHWM) "
            "| machine load (1 min) before → after |", "|---|---|---|---|---|---|"]
    for m in modes:
        load = " → ".join(f"{x:.1f}" for x in m.load) or "—"
        rows.append(f"| {m.mode} | {fmt(m.ready_s, ' s')} | {_mb(m.mem_ready_kb, 'VmRSS')} "
                    f"| {_mb(m.mem_end_kb, 'VmRSS')} | {_mb(m.mem_end_kb or m.mem_ready_kb, 'VmHWM')} "
                    f"| {load} |")
    return rows


def shares_line(modes: list[ModeResult]) -> str:
    """The streaming single-session turn, split into its stages as shares of the client v2v."""
    r = _single(modes, "streaming")
    total = pct(_v2v(r), 50) if r else None
    if r is None or not total:
        return ""
    parts = []
    for key, label in STAGES[:5]:
        v = pct(_stage(r, key), 50)
        if v is not None:
            parts.append(f"{label.split(' → ')[-1].split(' (')[0]} {fmt(v)} ms ({v / total:.0%})")
    rest = pct(_residual(r, "at_tts_first_audio_ms"), 50)
    if rest is not None:
        parts.append(f"server queue + network both ways {fmt(rest)} ms ({rest / total:.0%})")
    return f"Streaming, 1 session, medians: v2v {fmt(total)} ms = " + "; ".join(parts) + \
        " (medians of separate spans do not add up exactly)."


def render_table(modes: list[ModeResult], probe_ms: list[float]) -> str:
    from .capacity_report import capacity_rows  # here: that module builds on fmt and pct above

    lines = ["", "voice-to-voice at the client (end of speech sent → first agent sample heard)"]
    lines += v2v_rows(modes) + ["", ratio_line(modes), ""] + stage_rows(modes) + ["", shares_line(modes), ""]
    lines += [f"aiortc one-way audio latency on loopback: p50 {fmt(pct(probe_ms, 50))} ms, "
              f"p95 {fmt(pct(probe_ms, 95))} ms ({len(probe_ms)} bursts)", ""]
    lines += capacity_rows(modes) + [""]
    lines += memory_rows(modes) + [""] + stall_rows(modes) + [""] + ops_rows(modes) + [""]
    lines += http_rows(modes)
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or "?"
    ram = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}, {ram} RAM, " \
           f"{platform.system()} {platform.release()}, Python {platform.python_version()}"


@cache
def _git() -> str:
    """HEAD when first asked (runs call it at their start: the code the server ran)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def _turn_rows(modes: list[ModeResult]) -> list[str]:
    rows = ["| mode | question | heard as | v2v | reply (start) |", "|---|---|---|---|---|"]
    for m in modes:
        for r in m.runs[:1]:
            for t in r.turns:
                reply = (t.reply[:70] + "…") if len(t.reply) > 70 else t.reply
                rows.append(f"| {m.mode} | {t.question} | {t.transcript or t.error or '—'} "
                            f"| {fmt(t.v2v_ms, ' ms')} | {reply.replace('|', '/')} |")
    return rows


CLUSTER_NOTE = (
    "**cluster** (`--cluster`, bench/cluster.py): the deployment of docs/deploy.md on the same "
    "machine: HAProxy 2.6 (deploy/haproxy.cfg) in front of two `voice-agent serve` workers "
    "sharing a real redis-server (each worker's capacity its own `server.max_sessions`, the "
    "cluster's twice that) and one `voice-agent model-server` (the LLM over HTTP, "
    "`ai.provider=openai`). The clients know only HAProxy's address; the media go to the "
    "worker that answered the offer. CPU and memory are those of all its processes together; "
    "capacity and load are the cluster's (`/v3/health`'s `cluster`).")


def _rounds(args: argparse.Namespace) -> str:
    rounds = getattr(args, "rounds", 1) or 1
    return (f", in {rounds} rounds (each round runs every count of sessions in turn; the "
            f"tables merge the rounds)" if rounds > 1 else "")


def render_report(modes: list[ModeResult], probe_ms: list[float], items: list[SpeechItem], *,
                  args: argparse.Namespace, started: float, config: V3Config) -> str:
    from .capacity_report import (  # builds on fmt, pct
        EXPLANATION, TURN_LIMIT_S, capacity_rows, round_rows, scaling_rows)

    cmd = "voice-agent " + " ".join(sys.argv[1:]) if sys.argv[1:] else "voice-agent bench latency"
    when = dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    s = _single(modes, "streaming")
    transport_med = pct(_stage(s, "transport_ms"), 50) if s else None
    residual = pct(_residual(s), 50) if s else None
    env = ", ".join(f"{k}={v}" for k, v in sorted(_overrides(args).items())) or "defaults"
    speech = [round(i.speech_end_s - 0.3, 1) for i in items]
    out = [
        "# Benchmarks", "",
        "Written by `voice-agent bench latency` (bench/latency.py); every run overwrites this page.", "",
        f"- Command: `{cmd}`",
        f"- Date: {when}; git commit {_git()}",
        f"- Machine: {_machine()}; no GPU",
        f"- Models: STT whisper `{getattr(args, 'stt_model', None) or config.stt.model}`, "
        f"LLM `{getattr(args, 'llm_model', None) or config.ai.model}` "
        f"(max {config.ai.max_tokens} tokens), TTS `{config.voice.provider}` `{config.voice.voice}`; "
        f"end-of-turn silence {config.stt.end_of_turn_silence_ms} ms; bench overrides: {env}",
        f"- Input: {len(items)} espeak-ng questions at 48 kHz ({min(speech)}–{max(speech)} s of speech), "
        f"{args.turns} turn{'' if args.turns == 1 else 's'} per session, cycled{_rounds(args)}; "
        f"a turn fails after {TURN_LIMIT_S:g} s.",
        f"- Capacity: the server's own `server.max_sessions` = "
        f"{_capacity(modes)}; sessions beyond it are refused with `busy`.", "",
        "## How it is measured",
        "The server runs as a subprocess (`voice-agent serve` on 127.0.0.1, a free port, "
        "`VOICE_AGENT_PIPELINE__MODE=streaming` or `naive`; the naive baseline waits for the end of "
        "the turn, transcribes with faster-whisper's own `transcribe()` (30 s window, "
        "`VOICE_AGENT_STT__FAST_WINDOW_S=0`), generates the whole reply, then synthesises it "
        "whole). Each session is a real aiortc peer "
        "(bench/client.py) with ICE on 127.0.0.1 only (server: `VOICE_AGENT_WEBRTC__HOST_ADDRESSES=[\"127.0.0.1\"]`; "
        "client: aioice's host addresses patched; the session table lists the addresses the server "
        "offered). The client plays the "
        "question in 20 ms Opus frames paced on an absolute clock, then silence. **Voice-to-voice** "
        "= the `time.monotonic()` at which the frame holding the last speech sample (found from the "
        "WAV's energy, before its trailing pad) was handed to the encoder → the arrival time of the "
        "first agent sample above −40 dBFS (frame arrival + its offset in the frame at 48 kHz). "
        "It includes both network legs and aiortc's receive jitter buffer, but no sound-card "
        "playout buffer. Sessions in a run speak at the same time (the worst case).", "",
        *([CLUSTER_NOTE, ""] if any(m.mode.startswith("cluster") for m in modes) else []),
        "## Sessions at once: capacity and admission", *capacity_rows(modes), "", EXPLANATION,
        "",
        *(["Against one session of the same server (issue #15's bar: p50 within 2×, p95 "
           "within 3× of one session's p50), with the machine's speed around each run "
           "(bench/speed_probe.py, a fixed single-core loop: a larger figure is a slower "
           "machine):", "", *scaling, ""] if (scaling := scaling_rows(modes)) else []),
        "## Voice-to-voice at the client", *v2v_rows(modes), "", ratio_line(modes), "",
        *(["First turns (every session starts speaking at the same moment) against later "
           "turns (the sessions have drifted apart by then):", "", *rounds, ""]
          if (rounds := round_rows(modes)) else []),
        "## Targets", *target_rows(modes), "",
        "What was tried, what each change bought, and why the targets are missed: "
        "[latency.md](latency.md).", "",
        "## Where the time goes", *stage_rows(modes), "", shares_line(modes), "",
        "Server stages come from the `metrics` events (one clock inside the server). The server's "
        "`speech_end` is the VAD's estimate (end of turn minus the silence run), so the "
        "client-minus-server residual holds both network legs plus VAD frame rounding.", "",
        "## Transport (one-way audio latency)",
        f"- aiortc ↔ aiortc on loopback, measured in one process with one clock (bench/transport_probe.py, "
        f"tone bursts): p50 **{fmt(pct(probe_ms, 50))} ms**, p95 {fmt(pct(probe_ms, 95))} ms, "
        f"{len(probe_ms)} bursts. Most of it is aiortc's audio jitter buffer, which holds 4 packets "
        "(80 ms) before it releases the first one.",
        f"- Inside the server, first TTS audio → first frame sent (`transport_ms`): median "
        f"{fmt(transport_med)} ms.",
        f"- Client v2v − server total (both legs): median {fmt(residual)} ms, i.e. about "
        f"{fmt(residual / 2 if residual is not None else None)} ms each way.", "",
        "## Memory (server process)", *memory_rows(modes), "",
        "## Stalls",
        "Frame-arrival gaps are transport stalls (no audio frame for > 200 ms while the agent was "
        "speaking). The bench client shares the 2 cores with the server: a gap counts as made by "
        "the client when less than 200 ms of it is left once the time the client's own event loop "
        "was frozen (its lag monitor) is taken out: made on the client's side of the loopback, not by "
        "the server's pacing. "
        "Silent runs are counted on the audio's own sample clock between two loud samples "
        "of one reply: they include the voice's natural pauses between sentences, so compare the "
        "streaming count with the naive baseline, which synthesises the reply in one piece. The server "
        "columns come from each turn's metrics (`playback_gaps`, `playback_gap_max_ms`): times the "
        "reply's audio queue ran dry while the rest of the reply was still being made, i.e. silences "
        "that are not in the voice.", "",
        *stall_rows(modes), "",
        "## Session operations", *ops_rows(modes), "",
        "## HTTP endpoints (idle server, sequential requests, keep-alive)", *http_rows(modes), "",
        "## Recovery after a provider failure",
        "Not measured here: the server exposes no way to make a provider fail from outside. "
        "Retry, backoff and circuit breakers are covered by tests/unit/test_core_recovery.py.", "",
        "## Turns (first run of each mode)", *_turn_rows(modes), "",
    ]
    return "\n".join(out)


def _capacity(modes: list[ModeResult]) -> str:
    seen = sorted({r.capacity for m in modes for r in m.runs if r.capacity is not None})
    return ", ".join(str(c) for c in seen) or "?"


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "stt_model", None):
        out["VOICE_AGENT_STT__MODEL"] = args.stt_model
    if getattr(args, "llm_model", None):
        out["VOICE_AGENT_AI__MODEL"] = args.llm_model
    return out
