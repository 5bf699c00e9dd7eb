"""`voice-agent bench pauses`: issue #14's acceptance check of the end of turn, from outside.

One server subprocess (bench/server_proc.py, the real models), real WebRTC sessions
(bench/client.py's BenchClient), questions spoken by the synthetic voices of bench/voices.py.
Two sets (bench/pauses_set.py holds them and the scoring):

1. **Split questions**: each half spoken on its own, trimmed of the engine's silence and joined
   with a pause of 0.8-1.5 s, sent as one utterance. Pass: no reply (text or audio) before the
   end of the second half was sent, and the first final transcript holds the second half.
   Target: >= 95% pass.
2. **Complete questions**: the server's ``end_of_turn_delay_ms`` (VAD end of speech → end of
   turn) per voice and overall: median (target <= 300 ms; was a fixed 500), p90, the share
   within 300 ms, how many replies were ``preemptive``, and the voice-to-voice p50.

Each question once the server is listening again and has been silent for a second (as bench
accuracy does); a fresh session every ``--per-session`` questions. ``--env KEY=VALUE`` and
``--server-src DIR`` make an A/B (e.g. ``--env VOICE_AGENT_PIPELINE__PREEMPTIVE_REPLY=false``).
The summary tables are printed; ``--report PATH`` also writes the markdown report there.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from .accuracy import (SETTLE_LIMIT_S, SETTLE_S, TURN_TIMEOUT_S, _commit, _cpu_mark,
                       _other_cores, settle)
from .client import LOUD, BenchClient, ReplyRecorder, _mono_s16, run_clients
from .latency import _env_overrides
from .pauses_set import (SPLITS, CompleteTurn, SplitTurn, complete_questions, complete_rows,
                         from_metrics, judge_split, pause_for, split_failure_rows, split_rows,
                         summarise_complete, summarise_split, verdict)
from .report import _machine
from .server_proc import serving
from .speech_set import LEAD_S, RATE, TRAIL_S, SpeechItem, read_wav_mono, speech_end_s
from .voices import Voice, make_voice_set, select_voices

DEFAULT_VOICES = ("espeak-us", "espeak-gb", "flite-kal", "flite-slt", "piper-joe")


# --- audio --------------------------------------------------------------------------------------


def trim(samples: np.ndarray) -> np.ndarray:
    """The speech without the engine's own leading and trailing silence (speech_set's
    -45 dBFS windows, from each end), so that the pause between the halves is exact."""
    end = int(round(speech_end_s(samples) * RATE))
    start = len(samples) - int(round(speech_end_s(samples[::-1].copy()) * RATE))
    return samples[start:end] if end > start else samples


def _spoken(voice: Voice, text: str, raw: Path) -> np.ndarray:
    voice.render(text, raw)
    wav = raw.with_suffix(".48k.wav")
    subprocess.run(["sox", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)],
                   check=True, capture_output=True, timeout=60)
    samples, _ = read_wav_mono(wav)
    raw.unlink(missing_ok=True)
    wav.unlink(missing_ok=True)
    return trim(samples)


def joined(first: np.ndarray, second: np.ndarray, pause_s: float) -> np.ndarray:
    """Lead-in, first half, the pause, second half, trailing pad (int16 at 48 kHz)."""
    def zeros(s: float) -> np.ndarray:
        return np.zeros(int(round(s * RATE)), np.int16)

    return np.concatenate([zeros(LEAD_S), first, zeros(pause_s), second, zeros(TRAIL_S)])


def make_split_set(voice: Voice, folder: Path, limit: int) -> list[tuple[SplitTurn, SpeechItem]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (a, b) in enumerate(SPLITS[:limit] if limit else SPLITS):
        pause = pause_for(i)
        samples = joined(_spoken(voice, a, folder / f"{i:02d}a.wav"),
                         _spoken(voice, b, folder / f"{i:02d}b.wav"), pause)
        path = folder / f"split-{i:02d}.wav"
        with wave.open(str(path), "wb") as w:  # kept for listening while the run lasts
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(samples.tobytes())
        item = SpeechItem(f"{a} {b}", path, samples, speech_end_s(samples))
        out.append((SplitTurn(voice.name, a, b, pause), item))
    return out


# --- the client side ----------------------------------------------------------------------------


class WatchingRecorder(ReplyRecorder):
    """BenchClient's recorder that also notes the first loud agent frame after ``watch()``,
    armed or not (BenchClient.turn arms its capture only at the end of the speech)."""

    def __init__(self) -> None:
        super().__init__()
        self.since: float | None = None
        self.first_loud_at: float | None = None

    def watch(self, since: float) -> None:
        self.since, self.first_loud_at = since, None

    def _on_frame(self, frame: av.AudioFrame, now: float) -> None:
        super()._on_frame(frame, now)
        if self.since is None or self.first_loud_at is not None or now < self.since:
            return
        if np.abs(_mono_s16(frame).astype(np.int32)).max(initial=0) > LOUD:
            self.first_loud_at = now


async def _ask(client: BenchClient, item: SpeechItem) -> tuple[Any, list[dict[str, Any]],
                                                                float | None]:
    """One turn, then the settle: the TurnResult, the events of the turn, and the first loud
    agent audio that arrived before the end of the speech was sent (None: none)."""
    start = len(client.events)
    recorder = client.recorder
    assert isinstance(recorder, WatchingRecorder)
    recorder.watch(time.monotonic())
    turn = await client.turn(item, timeout_s=TURN_TIMEOUT_S)
    loud = recorder.first_loud_at
    recorder.since = None
    if not await settle(client.events) and not turn.error:
        turn.error = f"the server was not listening again {SETTLE_LIMIT_S:.0f} s later"
    early = loud if loud is not None and turn.speech_end_at and loud < turn.speech_end_at \
        else None
    return turn, client.events[start:], early


async def _session(base_url: str, chunk: list[tuple[Any, SpeechItem]]) -> list[Any]:
    client = BenchClient(base_url)
    client.recorder = WatchingRecorder()  # before connect: the agent's track starts it
    out: list[Any] = []
    try:
        await client.connect()
        for record, item in chunk:
            turn, events, early = await _ask(client, item)
            record.ok, record.error, record.v2v_ms = turn.ok, turn.error, turn.v2v_ms
            note = f", {turn.error}" if turn.error else ""
            if isinstance(record, SplitTurn):
                judge_split(record, events, turn.speech_end_at, early)
                eot = turn.metrics.get("end_of_turn_delay_ms")
                record.eot_ms = eot if isinstance(eot, (int, float)) else None
                mark = "ok" if record.passed else "FIRST HALF" if record.reasons else "FAILED"
                why = f" [{'; '.join(record.reasons)}]" if record.reasons else ""
                print(f"  [{record.voice}] {mark} {record.first!r} / {record.second!r} "
                      f"(pause {record.pause_s:g} s) -> heard {record.transcript!r} "
                      f"({record.transcript_after_ms} ms after the end){why}{note}", flush=True)
            else:
                from_metrics(record, turn.metrics)
                record.transcript = turn.transcript
                print(f"  [{record.voice}] {'ok' if turn.ok else 'FAILED'} {record.question!r} "
                      f"-> heard {turn.transcript!r}, end of turn {record.eot_ms} ms"
                      f"{' (preemptive)' if record.preemptive else ''}, v2v {turn.v2v_ms} ms"
                      f"{note}", flush=True)
            out.append(record)
        await client.end()
    except Exception as exc:  # a session that cannot start fails its remaining turns
        for record, _ in chunk[len(out):]:
            record.ok, record.error = False, f"{type(exc).__name__}: {exc}"
            out.append(record)
    finally:
        await client.close()
    return out


@dataclass
class Run:
    voices: list[str]
    split: dict[str, list[SplitTurn]] = field(default_factory=dict)
    complete: dict[str, list[CompleteTurn]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    per_session: int = 8
    server_ready_s: float | None = None
    server_error: str = ""
    load: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    other_cores: float | None = None
    """CPU cores other processes (not the server, not this client) used during the turns: a
    busy machine delays the end of turn and the replies."""

    def all_split(self) -> list[SplitTurn]:
        return [t for turns in self.split.values() for t in turns]

    def all_complete(self) -> list[CompleteTurn]:
        return [t for turns in self.complete.values() for t in turns]


async def _bench(args: argparse.Namespace, voices: list[Voice], env: dict[str, str]) -> Run:
    run = Run([v.name for v in voices], env=env, per_session=max(1, args.per_session))
    questions = complete_questions()
    questions = questions[:args.limit] if args.limit else questions
    with tempfile.TemporaryDirectory(prefix="va-bench-pauses-") as tmp:
        sets: dict[str, tuple[list[Any], list[Any]]] = {}
        for v in voices:
            print(f"speaking the questions as {v.name} ...", flush=True)
            folder = Path(tmp) / v.name
            split = await asyncio.to_thread(make_split_set, v, folder / "split", args.limit)
            items = await asyncio.to_thread(make_voice_set, v, questions, folder / "whole")
            sets[v.name] = (split, [(CompleteTurn(v.name, q), it)
                                    for q, it in zip(questions, items)])
        t0 = time.monotonic()
        async with serving(run, env, getattr(args, "config", None)) as server:
            t0, mark = time.monotonic(), _cpu_mark(server)
            try:
                for v in voices:
                    split, whole = sets[v.name]
                    for name, pairs in (("split", split), ("complete", whole)):
                        done: list[Any] = []
                        for i in range(0, len(pairs), run.per_session):
                            done += await _session(server.base_url, pairs[i:i + run.per_session])
                        getattr(run, name)[v.name] = done
                    s = summarise_split(run.split[v.name])
                    c = summarise_complete(run.complete[v.name])
                    print(f"[{v.name}] split: {s.passed}/{s.turns} no reply to the first half; "
                          f"complete: end of turn p50 {c.p50} ms, p90 {c.p90} ms, "
                          f"{c.preemptive} preemptive", flush=True)
                run.other_cores = _other_cores(server, mark)[1]
            finally:
                run.wall_s = round(time.monotonic() - t0, 1)
    return run


# --- report -------------------------------------------------------------------------------------


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """``--env KEY=VALUE`` options as a dict; a pair without ``=`` raises ValueError."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--env wants KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def render_report(run: Run, args: argparse.Namespace, *, started: float, commit: str) -> str:
    cmd = "voice-agent " + " ".join(sys.argv[1:]) if sys.argv[1:] else "voice-agent bench pauses"
    split, complete = run.all_split(), run.all_complete()
    slow = [t for t in complete if t.eot_ms is None or t.eot_ms > 300]
    lines = [
        "# Pauses: no reply to half a question, and a quick end of turn (issue #14)",
        "",
        "Generated by `voice-agent bench pauses` (bench/pauses.py).",
        "",
        f"- command: `{cmd}`",
        f"- started: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(started))}",
        f"- server under test: commit {commit}"
        + (f", served from `{args.server_src}`" if getattr(args, "server_src", None) else ""),
        "- server environment overrides: "
        + (", ".join(f"`{k}={v}`" for k, v in run.env.items() if k != "PYTHONPATH") or "none"),
        f"- machine: {_machine()}; load (1-minute average) at the server start → after the "
        f"last turn: {' → '.join(f'{x:.2f}' for x in run.load) or '—'}; other processes "
        f"used {run.other_cores if run.other_cores is not None else '—'} cores on average "
        "during the turns",
        f"- voices: {', '.join(run.voices)}; {run.per_session} questions per session, one turn "
        f"at a time (the next once the server is listening and silent for {SETTLE_S:g} s); "
        f"server ready in {run.server_ready_s} s; turns took {run.wall_s} s",
    ]
    if run.server_error:
        lines += ["", f"**The server failed: {run.server_error}**"]
    lines += ["", "## Verdict", "", *verdict(split, complete), "",
              "## Split questions (a pause of 0.8-1.5 s inside)", "", *split_rows(run.split), "",
              "A turn **answered the first half** when reply text or agent audio reached the "
              "client before the end of the second half was sent, or when the server's first "
              "final transcript lacks the second half's key words. A failed turn (timeout, "
              "broken session) is neither, and no pass.", "",
              "## Complete questions: end of turn", "", *complete_rows(run.complete), "",
              "End of turn: the server's `end_of_turn_delay_ms` (its VAD's end of speech → the "
              "end of the turn). Preemptive: the reply was started while the user spoke and "
              "kept. Voice-to-voice: end of speech sent → first agent audio heard at the "
              "client.", "",
              "## Split questions that failed", "", *split_failure_rows(split), "",
              "## Complete questions not ended within 300 ms", ""]
    if slow:
        lines += ["| voice | question | heard | end of turn | preemptive |",
                  "|---|---|---|---|---|"]
        lines += [f"| {t.voice} | {t.question} | {t.transcript or '—'} "
                  f"| {'—' if t.eot_ms is None else f'{t.eot_ms:.0f} ms'}"
                  f"{'' if t.ok else f' (failed: {t.error})'} | {'yes' if t.preemptive else ''} |"
                  for t in slow]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def run_pauses(config: Any, args: argparse.Namespace) -> int:
    from voice_agent.transport.ice import restrict_host_addresses

    started = time.time()
    commit = _commit(getattr(args, "server_src", None))
    try:
        voices = select_voices(args.voices or list(DEFAULT_VOICES))
        env = {**_env_overrides(args), **parse_env(args.env)}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = [f"{v.name}: {why}" for v in voices if (why := v.missing())]
    if missing:
        print("error: cannot make these voices:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    n = min(args.limit or 999, len(SPLITS)) + min(args.limit or 999, len(complete_questions()))
    print(f"{n} questions × {len(voices)} voices: about {n * len(voices) * 9 / 60:.0f} minutes "
          f"of turns", flush=True)
    with restrict_host_addresses(["127.0.0.1"]):  # the client offers loopback only
        run = run_clients(_bench(args, voices, env))
    print("\n".join(["", "Split questions:", *split_rows(run.split), "",
                     "Complete questions:", *complete_rows(run.complete), "",
                     *verdict(run.all_split(), run.all_complete()),
                     f"(other processes used {run.other_cores} cores on average during the "
                     "turns: more than ~0.3 slows the server on a 2-core machine)"]))
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_report(run, args, started=started, commit=commit))
        print(f"report written to {path}")
    any_ok = any(t.ok for t in [*run.all_split(), *run.all_complete()])
    return 0 if any_ok and not run.server_error else 1
