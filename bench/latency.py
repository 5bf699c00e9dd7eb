"""`voice-agent bench latency`: voice-to-voice latency at a real WebRTC client.

For each pipeline mode (streaming, then the naive baseline on the same questions) a fresh server
subprocess is started; N turns are spoken per session, with 1, 2, 4... concurrent sessions as asked.
The report (docs/benchmarks.md) is overwritten on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from voice_agent.core.config import V3Config
from voice_agent.core.loop_lag import LoopLagMonitor
from voice_agent.transport.ice import restrict_host_addresses

from .capacity_report import TURN_LIMIT_S
from .client import STALL_S, BenchClient, SessionRefused, TurnResult, run_clients
from .cluster import ClusterProcess
from .report import _git, render_report, render_table
from .server_proc import ServerProcess, machine_busy_s
from .speech_set import QUESTIONS, SpeechItem, make_speech_set
from .speed_probe import cpu_probe_ms
from .transport_probe import one_way_latency_ms

TURN_TIMEOUT_S = TURN_LIMIT_S  # the report's "answered within the limit" is this timeout
BETWEEN_TURNS_S = 0.5
HTTP_ENDPOINTS = ("/v3/health", "/v3/sessions", "/v3/config")


@dataclass
class SessionOps:
    connect_ms: float | None = None  # socket open → connection_established
    media_ms: float | None = None  # offer sent → peer connection connected
    end_closed_ms: float | None = None  # "end" sent → server closed the socket
    end_gone_ms: float | None = None  # "end" sent → session absent from GET /v3/sessions
    answer_ips: list[str] = field(default_factory=list)
    error: str = ""
    refused: str = ""
    """The code the server refused the session with up front (``busy``); then it has no turns."""
    refused_ms: float | None = None  # socket open → the refusal


@dataclass
class RunResult:
    mode: str
    sessions: int
    turns: list[TurnResult] = field(default_factory=list)
    ops: list[SessionOps] = field(default_factory=list)
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    other_cores: float = 0.0
    """Average CPU cores used by processes other than the server and this client during the run:
    the bench shares the machine, and on 2 cores any other work shows in every figure."""
    capacity: int | None = None
    """The server's capacity (/v3/health), the sessions it admits at once."""
    cpu_probe_ms: list[float] = field(default_factory=list)
    """bench/speed_probe.py before and after the run: the machine's speed around it."""
    load_max: float | None = None
    """The highest ``load`` /v3/health reported during the run (sampled every 0.5 s)."""
    server_loop_lag_max_ms: float | None = None
    client_loop_lag_max_ms: float | None = None
    """Worst event-loop lag during the run (the server's from /v3/health, a minute at a time, so
    up to 40 s before the run too): a frame gap that lines up with one side's lag was made by
    that side's starved loop, not by the network."""
    rounds: int = 1
    """Runs of this count of sessions merged into this one (``--rounds``), each probed apart:
    ``cpu_probe_ms`` holds a before/after pair per round."""

    @property
    def refused(self) -> int:
        """Sessions refused up front, in one round (every round asks for ``sessions``)."""
        return -(-sum(1 for o in self.ops if o.refused) // self.rounds)

    @classmethod
    def merged(cls, runs: list[RunResult]) -> RunResult:
        """The rounds of one count of sessions as one run: every turn, summed time and CPU,
        the worst lag and load, each round's probes in order."""
        first = runs[0]
        wall = sum(r.wall_s for r in runs)

        def worst(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return max(known) if known else None

        return cls(
            mode=first.mode, sessions=first.sessions, capacity=first.capacity, rounds=len(runs),
            turns=[t for r in runs for t in r.turns], ops=[o for r in runs for o in r.ops],
            wall_s=round(wall, 1), server_cpu_s=round(sum(r.server_cpu_s for r in runs), 1),
            other_cores=round(sum(r.other_cores * r.wall_s for r in runs) / max(wall, 1e-3), 2),
            cpu_probe_ms=[p for r in runs for p in r.cpu_probe_ms],
            load_max=worst([r.load_max for r in runs]),
            server_loop_lag_max_ms=worst([r.server_loop_lag_max_ms for r in runs]),
            client_loop_lag_max_ms=worst([r.client_loop_lag_max_ms for r in runs]))


@dataclass
class ModeResult:
    mode: str
    ready_s: float | None = None
    mem_ready_kb: dict[str, int] = field(default_factory=dict)
    mem_end_kb: dict[str, int] = field(default_factory=dict)
    runs: list[RunResult] = field(default_factory=list)
    http_ms: dict[str, list[float]] = field(default_factory=dict)
    error: str = ""
    load: list[float] = field(default_factory=list)
    """1-minute load average before and after: other work on the machine skews every figure."""


async def _wait_gone(http: httpx.AsyncClient, session_id: str, t0: float,
                     timeout_s: float = 5.0, poll_s: float = 0.005) -> float | None:
    """Poll /v3/sessions until ``session_id`` is no longer listed; ms since ``t0``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await http.get("/v3/sessions")
            if r.status_code == 200 and all(s.get("session_id") != session_id for s in r.json()):
                return round((time.monotonic() - t0) * 1000, 1)
        await asyncio.sleep(poll_s)
    return None


async def _one_session(base_url: str, items: list[SpeechItem], turns: int, offset: int,
                       http: httpx.AsyncClient,
                       round_no: int = 0) -> tuple[list[TurnResult], SessionOps]:
    client = BenchClient(base_url)
    ops = SessionOps()
    results: list[TurnResult] = []
    try:
        await client.connect()
        ops.connect_ms = round(client.connect_ms or 0, 1)
        ops.media_ms = round(client.media_ms or 0, 1)
        ops.answer_ips = client.answer_ips
        for t in range(turns):
            item = items[(t + offset) % len(items)]
            results.append(await client.turn(item, timeout_s=TURN_TIMEOUT_S))
            results[-1].index, results[-1].round = t, round_no
            await asyncio.sleep(BETWEEN_TURNS_S)
        t0 = time.monotonic()
        gone = asyncio.create_task(_wait_gone(http, client.session_id, t0))
        closed = await client.end()
        ops.end_closed_ms = round(closed, 1) if closed is not None and closed >= 0 else None
        ops.end_gone_ms = await gone
    except SessionRefused as exc:  # refused up front: no turn of it was ever accepted
        ops.refused, ops.refused_ms = exc.code, round(exc.after_ms, 1)
    except Exception as exc:  # a session that cannot start fails all its remaining turns
        ops.error = f"{type(exc).__name__}: {exc}"
        results += [TurnResult(question=items[(t + offset) % len(items)].text, ok=False,
                               error=ops.error) for t in range(len(results), turns)]
    finally:
        await client.close()
    return results, ops


async def _run_sessions(server: ServerProcess | ClusterProcess, items: list[SpeechItem], turns: int,
                        sessions: int, round_no: int = 0) -> RunResult:
    run = RunResult(mode=server.mode, sessions=sessions)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
        # A session of the previous run still closing would take a slot from this one.
        run.capacity = await _wait_no_sessions(http)
        run.cpu_probe_ms.append(cpu_probe_ms())
        cpu0, t0, busy0, own0 = server.cpu_s(), time.monotonic(), machine_busy_s(), _own_cpu_s()
        client_lag = LoopLagMonitor(window_s=3600.0)
        client_lag.start()
        watchers = [asyncio.create_task(_server_lag_max(http, run)),
                    asyncio.create_task(_load_max(http, run))]
        try:
            # All sessions speak at once: the worst case for the shared models. Those beyond
            # the server's capacity are refused up front (busy) and counted as refused.
            # A later round goes on through the questions where the last one stopped.
            done = await asyncio.gather(*(_one_session(server.base_url, items, turns,
                                                       i * 3 + round_no * turns, http, round_no)
                                          for i in range(sessions)))
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        await _read_server_lag(http, run)
    await client_lag.stop()
    run.cpu_probe_ms.append(cpu_probe_ms())
    run.client_loop_lag_max_ms = client_lag.snapshot().max_ms
    for results, ops in done:
        for turn in results:
            turn.stalls_client_frozen = stalls_made_by_client(turn.stall_spans, client_lag)
        run.turns += results
        run.ops.append(ops)
    wall = time.monotonic() - t0
    server_cpu = server.cpu_s() - cpu0
    other = machine_busy_s() - busy0 - server_cpu - (_own_cpu_s() - own0)
    run.wall_s = round(wall, 1)
    run.server_cpu_s = round(server_cpu, 1)
    run.other_cores = round(max(0.0, other) / max(wall, 1e-3), 2)
    return run


def stalls_made_by_client(spans: list[tuple[float, float]], client_lag: LoopLagMonitor) -> int:
    """How many frame gaps would be under 200 ms without the client's own loop freezing."""
    return sum(end - start - client_lag.frozen_s(start, end) < STALL_S for start, end in spans)


async def _wait_no_sessions(http: httpx.AsyncClient, timeout_s: float = 15.0) -> int | None:
    """Wait (bounded) until the server has no session open; return its capacity."""
    deadline = time.monotonic() + timeout_s
    capacity = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            body = (await http.get("/v3/health")).json()
            # Several workers behind a balancer: the figures of all of them (their heartbeats').
            whole = body.get("cluster") or {}
            capacity = whole.get("capacity", body.get("capacity", body.get("max_sessions")))
            if whole.get("sessions", body["active_sessions"]) == 0:
                break
        await asyncio.sleep(0.1)
    return int(capacity) if isinstance(capacity, int) else None


async def _load_max(http: httpx.AsyncClient, run: RunResult, every_s: float = 0.5) -> None:
    """The highest load the server reports during the run (a balancer's view of it)."""
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            body = (await http.get("/v3/health")).json()
            load = float((body.get("cluster") or {}).get("load", body["load"]))
            run.load_max = max(run.load_max or 0.0, load)
        await asyncio.sleep(every_s)


async def _read_server_lag(http: httpx.AsyncClient, run: RunResult) -> None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        lag = float((await http.get("/v3/health")).json()["event_loop_lag"]["max_ms"])
        run.server_loop_lag_max_ms = max(run.server_loop_lag_max_ms or 0.0, lag)


async def _server_lag_max(http: httpx.AsyncClient, run: RunResult, every_s: float = 20.0) -> None:
    """The server keeps a minute of loop lag (/v3/health): read it often enough to see it all."""
    while True:
        await asyncio.sleep(every_s)
        await _read_server_lag(http, run)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def _http_latency(base_url: str, requests: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as http:
        for path in HTTP_ENDPOINTS:
            with contextlib.suppress(httpx.HTTPError):
                await http.get(path)  # warm the connection and any lazy imports
            times: list[float] = []
            for _ in range(requests):
                t0 = time.monotonic()
                try:
                    r = await http.get(path)
                    if r.status_code == 200:
                        times.append(round((time.monotonic() - t0) * 1000, 2))
                except httpx.HTTPError:
                    pass
            out[path] = times
    return out


def _env_overrides(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if getattr(args, "stt_model", None):
        env["VOICE_AGENT_STT__MODEL"] = args.stt_model
    if getattr(args, "llm_model", None):
        env["VOICE_AGENT_AI__MODEL"] = args.llm_model
    if getattr(args, "server_src", None):
        # The server under test imports voice_agent from there (an older checkout's src/, for
        # an A/B in one sitting); this bench client, the instrument, stays the same.
        env["PYTHONPATH"] = str(args.server_src)
    return env


async def _wait_quiet(limit_s: float, max_cores: float = 0.3, window_s: float = 3.0) -> float:
    """Wait (at most ``limit_s``) until the machine is nearly idle; return the last busy figure."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, o0 = machine_busy_s(), _own_cpu_s()
        await asyncio.sleep(window_s)
        busy = (machine_busy_s() - b0 - (_own_cpu_s() - o0)) / window_s
        if busy <= max_cores or time.monotonic() >= deadline:
            return round(busy, 2)
        print(f"  waiting for a quieter machine: other processes use {busy:.1f} cores", flush=True)


async def _bench_mode(mode: str, args: argparse.Namespace, items: list[SpeechItem],
                      session_counts: list[int], http_requests: int) -> ModeResult:
    result = ModeResult(mode=mode)
    # The server's own capacity (its default, --config or VOICE_AGENT_SERVER__MAX_SESSIONS in
    # this environment), as in production: sessions beyond it are refused and counted so.
    server: ServerProcess | ClusterProcess
    if mode == "cluster":
        server = ClusterProcess(_env_overrides(args), config_file=getattr(args, "config", None))
        mode = result.mode = server.mode
    else:
        server = ServerProcess(mode, _env_overrides(args),
                               config_file=getattr(args, "config", None), max_sessions=None)
    if getattr(args, "wait_idle", 0):
        await _wait_quiet(args.wait_idle)
    print(f"[{mode}] starting the server on {server.base_url} ...", flush=True)
    result.load.append(round(os.getloadavg()[0], 2))
    try:
        await asyncio.to_thread(server.start)
        result.ready_s = round(server.ready_s or 0, 1)
        result.mem_ready_kb = server.memory_kb()
        if http_requests:
            result.http_ms = await _http_latency(server.base_url, http_requests)
        rounds = max(1, getattr(args, "rounds", 1) or 1)
        by_count: dict[int, list[RunResult]] = {n: [] for n in session_counts}
        # Interleaved (1 4 1 4 ...): on a host whose speed moves within minutes, each count of
        # sessions then meets its slow and fast spells alike, and a ratio between two counts
        # measures the server, not the hour (bench/speed_probe.py).
        for round_no in range(rounds):
            for n in session_counts:
                label = f" (round {round_no + 1} of {rounds})" if rounds > 1 else ""
                print(f"[{mode}] {n} session(s) x {args.turns} turns{label} ...", flush=True)
                run = await _run_sessions(server, items, args.turns, n, round_no)
                ok = [t for t in run.turns if t.ok]
                print(f"[{mode}]   {len(ok)}/{len(run.turns)} turns ok in {run.wall_s} s; "
                      f"{run.refused} of {n} session(s) refused (capacity {run.capacity}); "
                      f"other processes used {run.other_cores} cores meanwhile", flush=True)
                for t in run.turns:
                    if not t.ok:
                        print(f"[{mode}]   failed: {t.question!r}: {t.error}", flush=True)
                by_count[n].append(run)
        result.runs = [RunResult.merged(runs) for runs in by_count.values()]
        result.mem_end_kb = server.memory_kb()
        result.load.append(round(os.getloadavg()[0], 2))
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"[{mode}] error: {result.error}", file=sys.stderr, flush=True)
    finally:
        await asyncio.to_thread(server.stop)
        if result.error and server.last_log:
            print(server.last_log[-3000:], file=sys.stderr)
    return result


async def _bench(config: V3Config, args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    questions = tuple(q for q in QUESTIONS if len(q) < 40) if quick else QUESTIONS
    with tempfile.TemporaryDirectory(prefix="va-bench-speech-") as tmp:
        items = await asyncio.to_thread(make_speech_set, Path(tmp), questions)
        print("transport probe (two aiortc peers on loopback) ...", flush=True)
        probe = await one_way_latency_ms(bursts=5 if quick else 20)
        modes = [await _bench_mode("streaming", args, items, args.sessions, 10 if quick else 50)]
        if getattr(args, "cluster", False):
            # The same sessions through HAProxy to two workers (bench/cluster.py).
            modes.append(await _bench_mode("cluster", args, items, args.sessions,
                                           10 if quick else 50))
        if not args.no_baseline:
            # The baseline runs one session: it is the reference, not a load test.
            modes.append(await _bench_mode("naive", args, items, [1], 0))
    return {"probe_ms": probe, "modes": modes, "items": items, "config": config}


def run_latency(config: V3Config, args: argparse.Namespace) -> int:
    started = time.time()
    _git()  # the commit the server runs, not the one checked out when the report is written
    with restrict_host_addresses(["127.0.0.1"]):  # the client offers loopback only
        data = run_clients(_bench(config, args))
    modes: list[ModeResult] = data["modes"]
    table = render_table(modes, data["probe_ms"])
    print(table)
    report = render_report(modes, data["probe_ms"], data["items"], args=args, started=started,
                           config=config)
    path = Path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print(f"report written to {path}")
    if getattr(args, "json", None):
        raw = [dataclasses.asdict(m) for m in modes]
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
        print(f"turns written to {args.json}")
    streaming_ok = any(t.ok for m in modes if m.mode == "streaming" for r in m.runs for t in r.turns)
    return 0 if streaming_ok and not any(m.error for m in modes) else 1
