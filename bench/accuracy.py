"""`voice-agent bench accuracy`: does the agent hear spoken questions right, and answer them right?

One server subprocess (bench/server_proc.py, the real models), questions from
bench/accuracy_set.py spoken in every voice of bench/voices.py, sent as an outside user would:
over WebRTC with bench/client.py's BenchClient, in sessions of ``--per-session`` questions (a
fresh session after that, so that no conversation grows past the LLM's kept history), each
question once the server is listening again and has been silent for a second. Per voice
and overall: the word error rate of the server's final ``transcript`` against the question, the
heard-right and answered-right rates (definitions in accuracy_set.py), and the latency p50/p95 of
the same turns (end of speech sent to first agent audio heard, as ``bench latency`` measures it).
The report (docs/accuracy.md) is overwritten on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .accuracy_set import (QUESTIONS, Question, answered_right, heard_right, normalise_words,
                           word_edits)
from .client import BenchClient, TurnResult, run_clients
from .latency import _env_overrides, _own_cpu_s, _wait_quiet
from .report import _machine, fmt, pct
from .server_proc import ServerProcess, machine_busy_s, serving
from .speech_set import SpeechItem
from .voices import Voice, make_voice_set, select_voices

TURN_TIMEOUT_S = 45.0
"""A slow voice's long question is ~8 s of speech, then the reply: 45 s is a stuck turn."""
SETTLE_S = 1.0
"""After a turn, the server must be listening and silent this long before the next question."""
SETTLE_LIMIT_S = 30.0


@dataclass
class Scored:
    voice: str
    question: Question
    turn: TurnResult
    transcript: str
    """The turn's final transcripts, merged (see merge_finals): more than one when the server
    cut the question into two turns at a pause."""
    reply: str
    """The turn's final ai_responses, merged the same way."""
    finals: int = 0
    edits: int = 0
    words: int = 0
    heard: bool = False
    answered: bool = False

    @property
    def wer(self) -> float:
        return self.edits / max(1, self.words)


def merge_finals(texts: list[str]) -> str:
    """Join a turn's final texts, except that a final which starts with the one before it (the
    server transcribed the whole utterance again once the speech went on after a pause) takes
    its place instead of repeating it."""
    kept: list[str] = []
    for text in (t.strip() for t in texts):
        if not text:
            continue
        if kept:
            prev, words = normalise_words(kept[-1]), normalise_words(text)
            if words[:len(prev)] == prev:
                kept[-1] = text
                continue
        kept.append(text)
    return " ".join(kept)


def score(voice: str, question: Question, turn: TurnResult, transcripts: list[str],
          replies: list[str]) -> Scored:
    transcript, reply = merge_finals(transcripts), merge_finals(replies)
    ref = normalise_words(question.text)
    return Scored(voice, question, turn, transcript, reply, finals=len(transcripts),
                  edits=word_edits(ref, normalise_words(transcript)), words=len(ref),
                  heard=heard_right(question.text, transcript),
                  answered=answered_right(question, reply))


@dataclass
class VoiceResult:
    voice: Voice
    turns: list[Scored] = field(default_factory=list)
    error: str = ""
    wall_s: float = 0.0
    other_cores: float | None = None
    """CPU cores other processes used meanwhile: a busy machine slows every reply."""


@dataclass
class Summary:
    turns: int
    ok: int
    wer: float | None
    heard: float | None
    answered: float | None
    p50: float | None
    p95: float | None


def summarise(turns: list[Scored]) -> Summary:
    """Rates over every turn asked: a failed turn (timeout, broken session) counts as neither
    heard nor answered right, its question's words as deleted. Latency over the turns that got a
    reply."""
    n = len(turns)
    words = sum(t.words for t in turns)
    v2v = [t.turn.v2v_ms for t in turns if t.turn.ok and t.turn.v2v_ms is not None]
    return Summary(
        turns=n, ok=sum(t.turn.ok for t in turns),
        wer=sum(t.edits for t in turns) / words if words else None,
        heard=sum(t.heard for t in turns) / n if n else None,
        answered=sum(t.answered for t in turns) / n if n else None,
        p50=pct(v2v, 50), p95=pct(v2v, 95))


def _processing_status(events: list[dict[str, Any]]) -> str | None:
    for e in reversed(events):
        if e.get("type") == "status" and e.get("processing_status"):
            return str(e["processing_status"])
    return None


async def settle(events: list[dict[str, Any]], quiet_s: float = SETTLE_S,
                 limit_s: float = SETTLE_LIMIT_S, poll_s: float = 0.05) -> bool:
    """Wait until the server is listening again and has sent nothing for ``quiet_s``; False if
    it did not within ``limit_s``. A question the server cut in two at a pause gets two replies,
    the second after the turn that BenchClient.turn timed: without this wait it would be taken
    for the next question's reply, and every later turn of the session with it (seen with the
    slow espeak voice)."""
    deadline = time.monotonic() + limit_s
    while True:
        now = time.monotonic()
        last_at = float(events[-1].get("_at", 0.0)) if events else 0.0
        if _processing_status(events) in (None, "listening", "idle") and now - last_at >= quiet_s:
            return True
        if now >= deadline:
            return False
        await asyncio.sleep(poll_s)


def _finals(events: list[dict[str, Any]], kind: str) -> list[str]:
    return [str(e.get("text", "")) for e in events if e.get("type") == kind and e.get("final")]


async def _session(base_url: str, voice: Voice, chunk: list[tuple[Question, SpeechItem]]
                   ) -> list[Scored]:
    client = BenchClient(base_url)
    out: list[Scored] = []
    try:
        await client.connect()
        for question, item in chunk:
            start = len(client.events)
            turn = await client.turn(item, timeout_s=TURN_TIMEOUT_S)
            if not await settle(client.events) and not turn.error:
                turn.error = f"the server was not listening again {SETTLE_LIMIT_S:.0f} s later"
            events = client.events[start:]
            out.append(score(voice.name, question, turn, _finals(events, "transcript"),
                             _finals(events, "ai_response")))
            s = out[-1]
            mark = "ok" if s.heard and s.answered else "MISS"
            note = f", {turn.error}" if turn.error else ""
            print(f"  [{voice.name}] {mark} {question.text!r} -> heard {s.transcript!r}, "
                  f"answered {s.reply[:80]!r} ({turn.v2v_ms} ms{note})", flush=True)
        await client.end()
    except Exception as exc:  # a session that cannot start fails its remaining turns
        error = f"{type(exc).__name__}: {exc}"
        for question, item in chunk[len(out):]:
            out.append(score(voice.name, question, TurnResult(item.text, ok=False, error=error),
                             [], []))
    finally:
        await client.close()
    return out


@dataclass
class Run:
    voices: list[VoiceResult]
    questions: list[Question]
    per_session: int
    server_ready_s: float | None = None
    server_error: str = ""
    load: list[float] = field(default_factory=list)
    other_cores: float | None = None
    """Average CPU cores used by other processes during the turns (not the server, not us)."""
    idle_wait_busy: float | None = None
    wall_s: float = 0.0


def _cpu_mark(server: ServerProcess) -> tuple[float, float, float, float]:
    return time.monotonic(), server.cpu_s(), machine_busy_s(), _own_cpu_s()


def _other_cores(server: ServerProcess, mark: tuple[float, float, float, float]
                 ) -> tuple[float, float]:
    """Seconds since ``mark`` and the CPU cores that processes other than the server and this
    client used meanwhile, on average (as bench latency reports it)."""
    t0, cpu0, busy0, own0 = mark
    wall = time.monotonic() - t0
    other = machine_busy_s() - busy0 - (server.cpu_s() - cpu0) - (_own_cpu_s() - own0)
    return round(wall, 1), round(max(0.0, other) / max(wall, 1e-3), 2)


async def _bench(args: argparse.Namespace, voices: list[Voice], questions: list[Question]) -> Run:
    run = Run(voices=[VoiceResult(v) for v in voices], questions=questions,
              per_session=max(1, args.per_session))
    with tempfile.TemporaryDirectory(prefix="va-bench-accuracy-") as tmp:
        sets: dict[str, list[SpeechItem]] = {}
        for v in voices:
            print(f"speaking {len(questions)} questions as {v.name} ...", flush=True)
            sets[v.name] = await asyncio.to_thread(
                make_voice_set, v, [q.text for q in questions], Path(tmp) / v.name)
        if args.wait_idle:
            run.idle_wait_busy = await _wait_quiet(args.wait_idle)
        async with serving(run, _env_overrides(args), getattr(args, "config", None)) as server:
            whole = _cpu_mark(server)
            for vr in run.voices:
                pairs = list(zip(questions, sets[vr.voice.name]))
                mark = _cpu_mark(server)
                for i in range(0, len(pairs), run.per_session):
                    vr.turns += await _session(server.base_url, vr.voice,
                                               pairs[i:i + run.per_session])
                vr.wall_s, vr.other_cores = _other_cores(server, mark)
                s = summarise(vr.turns)
                print(f"[{vr.voice.name}] WER {_pc(s.wer)}, heard right {_pc(s.heard)}, answered "
                      f"right {_pc(s.answered)}, p50 {fmt(s.p50, ' ms')} ({vr.wall_s} s; other "
                      f"processes used {vr.other_cores} cores)", flush=True)
            run.wall_s, run.other_cores = _other_cores(server, whole)
    return run


# --- report -------------------------------------------------------------------------------------


def _pc(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _cell(text: str, limit: int = 90) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def summary_rows(run: Run) -> list[str]:
    rows = ["| voice | turns ok | WER | heard right | answered right | latency p50 | p95 "
            "| other processes (cores) |", "|---|---|---|---|---|---|---|---|"]
    every: list[Scored] = []
    for vr in run.voices:
        s = summarise(vr.turns)
        every += vr.turns
        rows.append(f"| {vr.voice.name} | {s.ok}/{s.turns} | {_pc(s.wer)} | {_pc(s.heard)} "
                    f"| {_pc(s.answered)} | {fmt(s.p50, ' ms')} | {fmt(s.p95, ' ms')} "
                    f"| {_num(vr.other_cores)} |")
    s = summarise(every)
    rows.append(f"| **all** | {s.ok}/{s.turns} | **{_pc(s.wer)}** | **{_pc(s.heard)}** "
                f"| **{_pc(s.answered)}** | {fmt(s.p50, ' ms')} | {fmt(s.p95, ' ms')} "
                f"| {_num(run.other_cores)} |")
    return rows


def failure_kind(t: Scored) -> str:
    if not t.turn.ok:
        return f"turn failed ({t.turn.error})"
    kinds = [t.turn.error] if t.turn.error else []
    if t.finals > 1:
        kinds.append(f"cut into {t.finals} turns")
    if not t.heard:
        kinds.append("misheard")
    if not t.answered:
        kinds.append("answer wrong" if t.heard else "answer wrong (after mishearing)")
    return ", ".join(kinds)


def failure_rows(run: Run) -> list[str]:
    rows = ["| voice | question | heard | answered | what went wrong |", "|---|---|---|---|---|"]
    for vr in run.voices:
        for t in vr.turns:
            if t.heard and t.answered and t.turn.ok and t.finals <= 1 and not t.turn.error:
                continue
            rows.append(f"| {vr.voice.name} | {_cell(t.question.text)} "
                        f"| {_cell(t.transcript) or '—'} | {_cell(t.reply) or '—'} "
                        f"| {failure_kind(t)} |")
    return rows if len(rows) > 2 else ["No failures."]


def _commit(server_src: str | None) -> str:
    """The commit of the server under test: the repo of --server-src, else this checkout."""
    where = Path(server_src) if server_src else Path(__file__).resolve().parents[1] / "src"
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (head or "?") + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def render_report(run: Run, args: argparse.Namespace, *, started: float, commit: str,
                  stt_model: str, llm_model: str) -> str:
    cmd = "voice-agent " + " ".join(sys.argv[1:]) if sys.argv[1:] else "voice-agent bench accuracy"
    gpu = "GPU: none visible (/dev/nvidia0 absent)" if not Path("/dev/nvidia0").exists() \
        else "GPU: present (the models' own settings decide whether they use it)"
    load = " → ".join(f"{x:.2f}" for x in run.load) or "—"
    lines = [
        "# Accuracy: spoken questions, heard and answered",
        "",
        "Generated by `voice-agent bench accuracy` (bench/accuracy.py); overwritten on every run.",
        "",
        f"- command: `{cmd}`",
        f"- started: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(started))}",
        f"- server under test: commit {commit}"
        + (f", served from `{args.server_src}`" if getattr(args, "server_src", None) else ""),
        f"- models: STT whisper {stt_model}, LLM {llm_model}",
        f"- machine: {_machine()}; {gpu}",
        f"- load (1-minute average) at the server start → after the last turn: {load}; other "
        f"processes used {run.other_cores if run.other_cores is not None else '—'} cores on "
        f"average during the turns"
        + (f"; after waiting for a quiet machine, other processes used {run.idle_wait_busy} cores"
           if run.idle_wait_busy is not None else ""),
        f"- {len(run.questions)} questions × {len(run.voices)} voices, "
        f"{run.per_session} questions per session (then a fresh session), one turn at a time "
        f"(the next once the server is listening again and silent for {SETTLE_S:g} s); "
        f"server ready in {run.server_ready_s} s; turns took {run.wall_s} s",
    ]
    if run.server_error:
        lines += ["", f"**The server failed: {run.server_error}**"]
    lines += [
        "",
        "## Per voice",
        "",
        *summary_rows(run),
        "",
        "- **WER**: word error rate of the server's final transcript against the question, after "
        "normalising case, punctuation, contractions and numbers (\"2\" = \"two\"); edits summed "
        "over the voice's questions, over their words.",
        "- **heard right**: the transcript is the question after normalisation, or it keeps every "
        "key word of the question (its words less function words such as *what, is, the, how, "
        "many*).",
        "- **answered right**: an expected answer word (e.g. *paris*; *eight* or *8*) is in the "
        "final reply text, as whole words.",
        "- A failed turn (timeout, broken session) counts as misheard, its words as deleted, and "
        "as answered wrong. **latency**: end of speech sent → first agent audio heard at the "
        "client, over the turns that got a reply (as `bench latency` measures it). **other "
        "processes**: the CPU cores that processes other than the server and this client used "
        "on average while the voice's turns ran (of 2 on the reference machine): a busy machine "
        "slows the replies.",
        "",
        "## Voices",
        "",
        "| voice | made with |", "|---|---|",
        *[f"| {vr.voice.name} | `{vr.voice.describe()}` |" for vr in run.voices],
        "",
        "Every WAV is resampled with sox to 48 kHz mono int16 with 0.3 s of silence before and "
        "0.2 s after (the client then sends silence).",
        "",
        "## Failures",
        "",
        "Every turn not both heard and answered right, or cut into more than one turn.",
        "",
        *failure_rows(run),
        "",
        "## Questions",
        "",
        "| question | expected answer (any of) |", "|---|---|",
        *[f"| {q.text} | {', '.join(q.answers)} |" for q in run.questions],
        "",
    ]
    return "\n".join(lines)


def run_accuracy(config: Any, args: argparse.Namespace) -> int:
    from voice_agent.transport.ice import restrict_host_addresses

    started = time.time()
    commit = _commit(getattr(args, "server_src", None))  # before the run: the code it served
    try:
        voices = select_voices(args.voices)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = [f"{v.name}: {why}" for v in voices if (why := v.missing())]
    if missing:
        print("error: cannot make these voices:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    questions = list(QUESTIONS[: args.limit] if args.limit else QUESTIONS)
    turn_s = 7.0  # a quiet 2-core machine: ~6.5 s a turn (question, reply, pauses); busy: 11-16
    print(f"{len(questions)} questions × {len(voices)} voices: about "
          f"{len(questions) * len(voices) * turn_s / 60:.0f} minutes of turns", flush=True)
    with restrict_host_addresses(["127.0.0.1"]):  # the client offers loopback only
        run = run_clients(_bench(args, voices, questions))
    table = "\n".join(summary_rows(run))
    print(table)
    report = render_report(run, args, started=started, commit=commit,
                           stt_model=getattr(args, "stt_model", None) or config.stt.model,
                           llm_model=getattr(args, "llm_model", None) or config.ai.model)
    path = Path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print(f"report written to {path}")
    any_ok = any(t.turn.ok for vr in run.voices for t in vr.turns)
    return 0 if any_ok and not run.server_error else 1
