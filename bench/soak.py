"""`voice-agent bench soak`: many sessions in a row and at once, against a server subprocess.

Phase 1: N sequential connect → speak → hear → disconnect cycles. Phase 2: C concurrent sessions
for M minutes; even-numbered workers cycle like phase 1, odd ones stay connected and ask one
question after another. Meanwhile the server's RSS and open file descriptors are sampled from
/proc. All traffic stays on 127.0.0.1. The report (docs/reliability.md) is overwritten each run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from voice_agent.core.config import V3Config
from voice_agent.core.loop_lag import LoopLagMonitor
from voice_agent.transport.ice import restrict_host_addresses
from voice_agent.core.tasks import within

from .client import BenchClient, run_clients
from .latency import _own_cpu_s, _wait_gone
from .report import _git
from .server_proc import ServerProcess, machine_busy_s, proc_status_kb
from .speech_set import SpeechItem, make_speech_set

LIGHT = {"stt": "tiny.en", "llm": "smollm2-135m"}
END_TIMEOUT_S = 10.0
BETWEEN_TURNS_S = 0.5


@dataclass
class Sample:
    t: float  # seconds since the server was ready
    rss_kb: int
    fds: int
    load1: float


@dataclass
class TurnOutcome:
    kind: str  # "cycle" (hang up once heard) or "persistent" (whole reply, then ask again)
    ok: bool
    reasons: list[str] = field(default_factory=list)
    v2v_ms: float | None = None  # end of speech sent → first loud agent sample heard
    question: str = ""


@dataclass
class SessionRecord:
    kind: str
    turns: list[TurnOutcome] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # connect / end / error-event failures
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.reasons and all(t.ok for t in self.turns) and bool(self.turns)

    def all_reasons(self) -> list[str]:
        return self.reasons + [r for t in self.turns for r in t.reasons]


@dataclass
class PhaseResult:
    name: str  # "sequential" or "concurrent"
    planned: str
    sessions: list[SessionRecord] = field(default_factory=list)
    wall_s: float = 0.0
    at_begin: Sample | None = None
    start: Sample | None = None  # after the warm-up (phase 2: once every worker had a turn)
    end: Sample | None = None  # after every session closed and a short settle
    peak_rss_kb: int = 0
    left_sessions: int | None = None
    load: list[float] = field(default_factory=list)  # 1-minute load average, start and end
    server_cpu_s: float = 0.0
    other_cores: float = 0.0
    warmup: int = 0  # phase 1: cycles before ``start``
    loop_lag: list[LoopLagSample] = field(default_factory=list)  # one per progress line


@dataclass
class ServerRun:
    label: str
    stt: str
    llm: str
    env: dict[str, str]
    ready_s: float | None = None
    ready: Sample | None = None
    phases: list[PhaseResult] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    hwm_kb: int = 0
    error: str = ""
    log_tail: str = ""


def fd_count(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


class Sampler:
    """Reads the server's VmRSS and fd count every ``every_s`` seconds into ``run.samples``."""

    def __init__(self, server: ServerProcess, run: ServerRun, every_s: float) -> None:
        self.server, self.run, self.every_s = server, run, every_s
        self.t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.client_loop = LoopLagMonitor()  # this process's loop, which every client shares

    def now(self) -> Sample:
        s = Sample(round(time.monotonic() - self.t0, 1),
                   proc_status_kb(self.server.pid).get("VmRSS", 0), fd_count(self.server.pid),
                   round(os.getloadavg()[0], 2))
        self.run.samples.append(s)
        return s

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())
        self.client_loop.start()

    async def _loop(self) -> None:
        while True:
            self.now()
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        await self.client_loop.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:80] if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def _finals(client: BenchClient, start: int) -> tuple[dict | None, dict | None]:
    """The first final transcript and final ai_response among the events from ``start`` on."""
    tr = ai = None
    for e in client.events[start:]:
        if e.get("final") and e.get("type") == "transcript" and tr is None:
            tr = e
        elif e.get("final") and e.get("type") == "ai_response" and ai is None:
            ai = e
    return tr, ai


async def _hear(client: BenchClient, item: SpeechItem, timeout_s: float) -> TurnOutcome:
    """Say ``item``; done once the final transcript, a final ai_response and loud agent audio are
    all in (the reply may still be playing: the caller hangs up over it, as people do)."""
    out = TurnOutcome("cycle", ok=False, question=item.text)
    start = len(client.events)
    deadline = time.monotonic() + timeout_s
    try:
        speech_end = await within(client.speech.say(item), timeout_s)
    except TimeoutError:
        out.reasons.append("speech track stalled")
        return out
    cap = client.recorder.arm(speech_end)
    while True:
        tr, ai = _finals(client, start)
        heard = cap.first_heard.is_set()
        if tr and ai and heard:
            break
        if client.closed_at is not None or time.monotonic() >= deadline:
            why = "socket closed by server" if client.closed_at is not None else "timeout"
            missing = [n for n, got in (("final transcript", tr), ("final ai_response", ai),
                                        ("agent audio", heard)) if not got]
            out.reasons.append(f"{why}: no {' / '.join(missing)}")
            client.recorder.capture = None
            return out
        await asyncio.sleep(0.05)
    if cap.first_audio_at is not None:
        out.v2v_ms = round((cap.first_audio_at - speech_end) * 1000, 1)
    if not (tr.get("text") or "").strip():
        out.reasons.append("empty final transcript")
    if not (ai.get("text") or "").strip():
        out.reasons.append("empty final ai_response")
    client.recorder.capture = None
    out.ok = not out.reasons
    return out


async def _ask(client: BenchClient, item: SpeechItem, timeout_s: float) -> TurnOutcome:
    """One whole turn on a session that stays open (BenchClient.turn waits for the metrics)."""
    start = len(client.events)
    r = await client.turn(item, timeout_s=timeout_s)
    out = TurnOutcome("persistent", ok=False, v2v_ms=r.v2v_ms, question=item.text)
    if not r.ok and r.error == "timeout":
        # Which step never came: events after the question started (the interrupt's late ones too).
        tr, ai = _finals(client, start)
        missing = [n for n, got in (("final transcript", tr), ("final ai_response", ai),
                                    ("agent audio", r.v2v_ms is not None)) if not got]
        heard = f" (heard as {tr.get('text', '')!r})" if tr else ""
        out.reasons.append(f"timeout: no {' / '.join(missing) or 'metrics'}{heard}")
    elif not r.ok:
        out.reasons.append(r.error)
    else:
        if not r.transcript.strip():
            out.reasons.append("no final transcript")
        if not r.reply.strip():
            out.reasons.append("no final ai_response")
    out.ok = not out.reasons
    return out


async def _hang_up(client: BenchClient, http: httpx.AsyncClient, rec: SessionRecord) -> None:
    t0 = time.monotonic()
    gone = asyncio.create_task(_wait_gone(http, client.session_id, t0, END_TIMEOUT_S, 0.1))
    if await client.end(END_TIMEOUT_S) is None:
        rec.reasons.append("end: server did not close the socket")
    if await gone is None:
        rec.reasons.append("end: session still listed in /v3/sessions")


async def _session(base_url: str, http: httpx.AsyncClient, items: list[SpeechItem], first: int,
                   timeout_s: float, stop_at: float | None,
                   on_turn: Callable[[], None] | None = None) -> SessionRecord:
    """One session. ``stop_at`` None: one cycle (hang up once heard); else ask questions one
    after another until ``stop_at``, each reply heard to its end."""
    rec = SessionRecord("cycle" if stop_at is None else "persistent")
    client = BenchClient(base_url)
    t0 = time.monotonic()
    try:
        try:
            await client.connect()
        except Exception as exc:
            rec.reasons.append(f"connect: {_short(exc)}")
            return rec
        if stop_at is None:
            rec.turns.append(await _hear(client, items[first % len(items)], timeout_s))
            if on_turn is not None:
                on_turn()
        else:
            k = first
            while time.monotonic() < stop_at and client.closed_at is None:
                rec.turns.append(await _ask(client, items[k % len(items)], timeout_s))
                k += 1
                if on_turn is not None:
                    on_turn()
                await asyncio.sleep(BETWEEN_TURNS_S)
        await _hang_up(client, http, rec)
    except Exception as exc:  # a broken session fails, the soak goes on
        rec.reasons.append(f"client: {_short(exc)}")
    finally:
        await client.close()
        rec.reasons += [f"error event: {e.get('code')}" for e in client.errors]
        rec.wall_s = round(time.monotonic() - t0, 2)
    return rec


async def _sessions_left(http: httpx.AsyncClient, wait_s: float = 10.0) -> int | None:
    """Sessions in /v3/sessions, waiting up to ``wait_s`` for them to drain to 0."""
    deadline, n = time.monotonic() + wait_s, None
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await http.get("/v3/sessions")
            n = len(r.json()) if r.status_code == 200 else None
        if n == 0 or time.monotonic() >= deadline:
            return n
        await asyncio.sleep(0.2)


@dataclass
class LoopLagSample:
    """Event-loop lag over the last minute, in ms: the server's (from /v3/health) and this
    client process's. A starved loop is what breaks media first."""

    server_p99: float | None
    server_max: float | None
    client_p99: float
    client_max: float


async def _health(http: httpx.AsyncClient, sampler: Sampler,
                  phase: PhaseResult | None = None) -> str:
    """The server's heap (glibc) and both loops' lag as a progress-line fragment; the lag is
    also kept in ``phase`` for the report."""
    own = sampler.client_loop.snapshot()
    lag = LoopLagSample(None, None, own.p99_ms, own.max_ms)
    heap = ""
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        health = (await http.get("/v3/health")).json()
        mem, server = health["memory"], health["event_loop_lag"]
        heap = f"heap in use {mem['heap_in_use_mb']:.0f} MB, free {mem['heap_free_mb']:.0f} MB, "
        lag.server_p99, lag.server_max = server["p99_ms"], server["max_ms"]
    if phase is not None:
        phase.loop_lag.append(lag)
    server_text = (f"server loop lag p99 {lag.server_p99:.0f} / max {lag.server_max:.0f} ms, "
                   if lag.server_max is not None else "")
    return (f"{heap}{server_text}client loop lag p99 {lag.client_p99:.0f} / "
            f"max {lag.client_max:.0f} ms, ")


class PhaseMeter:
    """CPU, load and memory around one phase."""

    def __init__(self, server: ServerProcess, sampler: Sampler, phase: PhaseResult) -> None:
        self.server, self.sampler, self.phase = server, sampler, phase
        self.cpu0, self.t0 = server.cpu_s(), time.monotonic()
        self.busy0, self.own0 = machine_busy_s(), _own_cpu_s()
        phase.load.append(round(os.getloadavg()[0], 2))

    async def finish(self, http: httpx.AsyncClient, settle_s: float) -> None:
        p = self.phase
        wall = time.monotonic() - self.t0
        cpu = self.server.cpu_s() - self.cpu0
        other = machine_busy_s() - self.busy0 - cpu - (_own_cpu_s() - self.own0)
        p.wall_s, p.server_cpu_s = round(wall, 1), round(cpu, 1)
        p.other_cores = round(max(0.0, other) / max(wall, 1e-3), 2)
        await _health(http, self.sampler, p)  # its window still holds the phase's last minute
        p.left_sessions = await _sessions_left(http)
        await asyncio.sleep(settle_s)  # let closed sessions' buffers go before reading memory
        p.end = self.sampler.now()
        p.load.append(p.end.load1)
        t_start = p.at_begin.t if p.at_begin else 0.0
        p.peak_rss_kb = max([s.rss_kb for s in self.sampler.run.samples if s.t >= t_start] or [0])


async def _sequential(server: ServerProcess, sampler: Sampler, http: httpx.AsyncClient,
                      items: list[SpeechItem], cycles: int, warmup: int,
                      timeout_s: float) -> PhaseResult:
    phase = PhaseResult("sequential", f"{cycles} cycles", warmup=warmup)
    meter = PhaseMeter(server, sampler, phase)
    phase.at_begin = sampler.now()
    if warmup == 0:
        phase.start = phase.at_begin
    for i in range(cycles):
        rec = await _session(server.base_url, http, items, i, timeout_s, None)
        phase.sessions.append(rec)
        if not rec.ok:
            print(f"  cycle {i + 1}: FAILED {rec.all_reasons()}", flush=True)
        if i + 1 == warmup:
            phase.start = sampler.now()
        if (i + 1) % 10 == 0 or i + 1 == cycles:
            s = sampler.now()
            bad = sum(not r.ok for r in phase.sessions)
            heap = await _health(http, sampler, phase)
            print(f"  {i + 1}/{cycles} cycles, {bad} failed, RSS {s.rss_kb / 1024:.0f} MB, "
                  f"{heap}fds {s.fds}, load {s.load1}", flush=True)
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode} after {i + 1} cycles")
    await meter.finish(http, settle_s=3.0)
    return phase


async def _concurrent(server: ServerProcess, sampler: Sampler, http: httpx.AsyncClient,
                      items: list[SpeechItem], sessions: int, minutes: float,
                      timeout_s: float) -> PhaseResult:
    phase = PhaseResult("concurrent", f"{sessions} sessions × {minutes:g} min")
    meter = PhaseMeter(server, sampler, phase)
    phase.at_begin = sampler.now()
    stop_at = time.monotonic() + minutes * 60
    waiting = set(range(sessions))  # warm-up: until every worker has finished one turn

    def turn_done(w: int) -> None:
        if w in waiting:
            waiting.discard(w)
            if not waiting:
                phase.start = sampler.now()

    async def worker(w: int) -> list[SessionRecord]:
        persistent, k, recs = w % 2 == 1, w * 3, []
        while time.monotonic() < stop_at:
            rec = await _session(server.base_url, http, items, k, timeout_s,
                                 stop_at if persistent else None, lambda: turn_done(w))
            recs.append(rec)
            k += max(1, len(rec.turns))
            if not rec.ok:
                print(f"  worker {w}: session FAILED {rec.all_reasons()}", flush=True)
                await asyncio.sleep(1.0)  # no tight loop against a server in trouble
        return recs

    async def progress() -> None:
        while True:
            await asyncio.sleep(30)
            s = sampler.now()
            health = await _health(http, sampler, phase)
            print(f"  {s.t:.0f} s: RSS {s.rss_kb / 1024:.0f} MB, {health}fds {s.fds}, "
                  f"load {s.load1}", flush=True)

    ticker = asyncio.create_task(progress())
    try:
        for recs in await asyncio.gather(*(worker(w) for w in range(sessions))):
            phase.sessions += recs
    finally:
        ticker.cancel()
    await meter.finish(http, settle_s=3.0)
    return phase


async def _server_run(label: str, models: dict[str, str], args: argparse.Namespace,
                      items: list[SpeechItem], cycles: int, concurrent: int,
                      minutes: float) -> ServerRun:
    env = {"VOICE_AGENT_STT__MODEL": models["stt"], "VOICE_AGENT_AI__MODEL": models["llm"]}
    run = ServerRun(label, models["stt"], models["llm"], env)
    # The whole server log outlives the run, to diagnose a failed session afterwards.
    kept = Path(tempfile.gettempdir()) / f"voice-agent-soak-{os.getpid()}-{label.split()[0]}.log"
    server = ServerProcess("streaming", env, config_file=getattr(args, "config", None),
                           max_sessions=max(4, concurrent + 2), keep_log=kept)
    print(f"[{label}] starting the server on {server.base_url} "
          f"(STT {models['stt']}, LLM {models['llm']}) ...", flush=True)
    sampler: Sampler | None = None
    try:
        await asyncio.to_thread(server.start)
        run.ready_s = round(server.ready_s or 0, 1)
        sampler = Sampler(server, run, args.sample_every)
        run.ready = sampler.now()
        sampler.start()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
            if cycles:
                warmup = min(args.warmup, max(1, cycles // 3))
                print(f"[{label}] phase 1: {cycles} sequential cycles "
                      f"(memory start after {warmup}) ...", flush=True)
                run.phases.append(await _sequential(server, sampler, http, items, cycles, warmup,
                                                    args.turn_timeout))
            if concurrent and minutes > 0:
                print(f"[{label}] phase 2: {concurrent} concurrent sessions for {minutes:g} min "
                      "...", flush=True)
                run.phases.append(await _concurrent(server, sampler, http, items, concurrent,
                                                    minutes, args.turn_timeout))
        run.hwm_kb = server.memory_kb().get("VmHWM", 0)
    except Exception as exc:
        run.error = _short(exc)
        print(f"[{label}] error: {run.error}", flush=True)
    finally:
        if sampler is not None:
            await sampler.stop()
        await asyncio.to_thread(server.stop)
        run.log_tail = server.last_log[-4000:]
        print(f"[{label}] server log: {kept}", flush=True)
    return run


async def _soak(config: V3Config, args: argparse.Namespace) -> tuple[list[ServerRun], list[SpeechItem]]:
    main = {"stt": args.stt_model or config.stt.model, "llm": args.llm_model or config.ai.model}
    light_label = "light models" if main != LIGHT else "light models (2nd server)"
    runs: list[ServerRun] = []
    with tempfile.TemporaryDirectory(prefix="va-soak-speech-") as tmp:
        items = await asyncio.to_thread(make_speech_set, Path(tmp))
        label = "light models" if main == LIGHT else "configured models"
        if args.cycles or (args.concurrent and args.minutes > 0):
            runs.append(await _server_run(label, main, args, items, args.cycles, args.concurrent,
                                          args.minutes))
        if args.light_cycles:
            runs.append(await _server_run(light_label, LIGHT, args, items, args.light_cycles, 0, 0))
    return runs, items


def run_soak(config: V3Config, args: argparse.Namespace) -> int:
    from .soak_report import render_report, verdicts

    started = time.time()
    _git()  # the commit the server runs, not the one checked out when the report is written
    with restrict_host_addresses(["127.0.0.1"]):  # the client offers loopback only
        runs, items = run_clients(_soak(config, args))
    report = render_report(runs, items, args=args, started=started, config=config)
    path = Path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    for line in verdicts(runs):
        print(line)
    print(f"report written to {path}")
    failed = any(r.error or any(not s.ok for p in r.phases for s in p.sessions)
                 or any(p.left_sessions != 0 for p in r.phases) for r in runs)
    return 1 if failed or not runs else 0
