"""Does one session's flood slow another session down? (issue #13, finding 2)

One server (a subprocess, the real models), one *victim* session on ``/ws/v3/audio`` that asks
typed questions one after another and times each reply (to its first loud audio frame, and to
the final ``ai_response``), in three phases of the same length:

- ``quiet``: nobody else is connected (the baseline, in the same run);
- ``text flood``: a second session sends ``text`` messages at ``--text-rate`` per second (45:
  within the default limit of 50), each a new question;
- ``audio flood``: a second session sends speech on ``/ws/v3/audio`` as fast as the socket takes
  it (the probe sent 60 s of speech in 1.5 s);
- ``talker at real time``: the same speech at real time, as a person talking non-stop would: the
  load the audio flood should cost at most, once it is paced.

Printed: medians and p95 per phase, their ratio to quiet, the server's CPU use and its most
threads during each phase. ``--server-src`` runs another checkout's server (an A/B with the same
client). Figures go in docs/reliability.md by hand, with the command and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from .client import LOUD, run_clients
from .latency import _env_overrides, _wait_quiet
from .server_proc import ServerProcess, proc_cpu_s
from .speech_set import QUESTIONS, make_item

RATE = 16000
REPLY_TIMEOUT_S = 60.0
PAUSE_S = 0.5
"""Between the victim's questions."""


@dataclass
class Phase:
    name: str
    first_audio_s: list[float] = field(default_factory=list)
    complete_s: list[float] = field(default_factory=list)
    failed: int = 0
    cpu_cores: float = 0.0
    max_threads: int = 0
    sent: int = 0
    """Messages or seconds of audio the flooder got in."""
    notes: list[str] = field(default_factory=list)


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _ask(ws: Any, question: str) -> tuple[float | None, float | None, str]:
    """Send one typed question; seconds to the first loud audio frame and to the final reply."""
    t0 = time.monotonic()
    await ws.send(json.dumps({"type": "text", "text": question}))
    first: float | None = None
    deadline = t0 + REPLY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                raw = await ws.recv()
        except TimeoutError:
            break
        if isinstance(raw, bytes):
            if first is None and np.abs(np.frombuffer(raw, np.int16)).max(initial=0) > LOUD:
                first = time.monotonic() - t0
            continue
        msg = json.loads(raw)
        if msg.get("type") == "error":
            return first, None, f"error {msg.get('code')}: {msg.get('message')}"
        if msg.get("type") == "ai_response" and msg.get("final"):
            # The rest of the reply's audio is still to come: wait for it to be sent.
            return first, time.monotonic() - t0, msg.get("text", "")
    return first, None, "timed out"


async def _victim(url: str, phase: Phase, seconds: float) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # connection_established
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            first, complete, text = await _ask(ws, QUESTIONS[i % 6])
            i += 1
            if first is None or complete is None:
                phase.failed += 1
                phase.notes.append(text[:120])
            else:
                phase.first_audio_s.append(first)
                phase.complete_s.append(complete)
            # Let the reply's audio play out, so that each question starts a fresh turn.
            quiet_until = time.monotonic() + PAUSE_S
            while time.monotonic() < quiet_until:
                try:
                    async with asyncio.timeout(quiet_until - time.monotonic()):
                        raw = await ws.recv()
                        if isinstance(raw, bytes) and np.abs(np.frombuffer(raw, np.int16)).max(
                                initial=0) > LOUD:
                            quiet_until = time.monotonic() + PAUSE_S
                except TimeoutError:
                    break


async def _text_flood(url: str, rate: float, phase: Phase, stop: asyncio.Event) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        reader = asyncio.get_running_loop().create_task(_drain(ws))
        try:
            n = 0
            while not stop.is_set():
                n += 1
                await ws.send(json.dumps({"type": "text", "text": f"Question {n}: what is {n} "
                                          f"plus {n}?"}))
                phase.sent += 1
                await asyncio.sleep(1 / rate)
        finally:
            reader.cancel()


async def _audio_flood(url: str, speech: np.ndarray, phase: Phase, stop: asyncio.Event, *,
                       real_time: bool = False) -> None:
    """Speech as fast as the socket takes it, or (``real_time``) as a microphone sends it."""
    chunk = RATE // 10  # 0.1 s per frame
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        reader = asyncio.get_running_loop().create_task(_drain(ws))
        try:
            pos = 0
            while not stop.is_set():
                piece = np.take(speech, range(pos, pos + chunk), mode="wrap")
                pos = (pos + chunk) % len(speech)
                await ws.send(piece.astype(np.int16).tobytes())
                phase.sent += 1
                await asyncio.sleep(0.1 if real_time else 0)
        finally:
            reader.cancel()
            # Gone at once: a clean close would wait behind the audio still in the socket's
            # buffers (minutes of it, read at real time), and the next phase would not be quiet.
            ws.transport.abort()


async def _drain(ws: Any) -> None:
    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        pass


async def _phase(server: ServerProcess, name: str, seconds: float, flood: Any) -> Phase:
    phase = Phase(name)
    stop = asyncio.Event()
    base = f"ws://127.0.0.1:{server.port}"
    flooder = asyncio.get_running_loop().create_task(flood(base, phase, stop)) if flood else None
    if flooder is not None:
        await asyncio.sleep(1.0)  # the flood is under way before the first question
    cpu0, t0 = proc_cpu_s(server.pid), time.monotonic()

    async def sample_threads() -> None:
        while True:
            phase.max_threads = max(phase.max_threads, _threads(server.pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.get_running_loop().create_task(sample_threads())
    try:
        await _victim(f"{base}/ws/v3/audio", phase, seconds)
    finally:
        phase.cpu_cores = (proc_cpu_s(server.pid) - cpu0) / max(1e-6, time.monotonic() - t0)
        stop.set()
        sampler.cancel()
        if flooder is not None:
            try:
                async with asyncio.timeout(10):
                    await flooder
            except Exception as exc:  # the flooder being cut off is a result, not a failure
                phase.notes.append(f"flooder: {type(exc).__name__}: {exc}"[:160])
    await asyncio.sleep(3.0)  # let the server settle before the next phase
    return phase


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]


def render(phases: list[Phase]) -> str:
    quiet = phases[0]
    q_first = statistics.median(quiet.first_audio_s) if quiet.first_audio_s else float("nan")
    q_done = statistics.median(quiet.complete_s) if quiet.complete_s else float("nan")
    rows = ["| phase | replies ok / failed | first audio p50 / p95 (s) | × quiet | reply text "
            "done p50 (s) | × quiet | server CPU (cores) | most threads | flooder sent |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        if p.first_audio_s:
            f50, f95 = statistics.median(p.first_audio_s), _p95(p.first_audio_s)
            d50 = statistics.median(p.complete_s)
            rows.append(f"| {p.name} | {len(p.first_audio_s)} / {p.failed} | {f50:.2f} / "
                        f"{f95:.2f} | {f50 / q_first:.2f} | {d50:.2f} | {d50 / q_done:.2f} | "
                        f"{p.cpu_cores:.2f} | {p.max_threads} | {p.sent} |")
        else:
            rows.append(f"| {p.name} | 0 / {p.failed} | - | - | - | - | {p.cpu_cores:.2f} | "
                        f"{p.max_threads} | {p.sent} |")
    notes = [f"- {p.name}: {n}" for p in phases for n in p.notes[:3]]
    return "\n".join(rows + ([""] + notes if notes else []))


async def _bench(args: argparse.Namespace) -> list[Phase]:
    with tempfile.TemporaryDirectory(prefix="va-bench-flood-") as tmp:
        item = await asyncio.to_thread(make_item, " ".join(QUESTIONS[6:]), Path(tmp) / "long.wav")
    speech = item.samples[::3]  # 48 kHz -> 16 kHz (espeak's speech has nothing above 8 kHz)
    server = ServerProcess("streaming", _env_overrides(args),
                           config_file=getattr(args, "config", None), max_sessions=4)
    if args.wait_idle:
        await _wait_quiet(args.wait_idle)
    print(f"starting the server on {server.base_url} ...", flush=True)
    await asyncio.to_thread(server.start)

    async def text(base: str, phase: Phase, stop: asyncio.Event) -> None:
        await _text_flood(f"{base}/ws/v3", args.text_rate, phase, stop)

    async def audio(base: str, phase: Phase, stop: asyncio.Event) -> None:
        await _audio_flood(f"{base}/ws/v3/audio", speech, phase, stop)

    async def talker(base: str, phase: Phase, stop: asyncio.Event) -> None:
        await _audio_flood(f"{base}/ws/v3/audio", speech, phase, stop, real_time=True)

    phases = []
    try:
        for name, flood in (("quiet", None), ("text flood", text), ("audio flood", audio),
                            ("talker at real time", talker), ("quiet again", None)):
            print(f"[{name}] {args.seconds:g} s ...", flush=True)
            phases.append(await _phase(server, name, args.seconds, flood))
    finally:
        await asyncio.to_thread(server.stop)
    return phases


def run_flood(args: argparse.Namespace) -> int:
    from voice_agent.transport.ice import restrict_host_addresses

    with restrict_host_addresses(["127.0.0.1"]):
        phases = run_clients(_bench(args))
    print(render(phases))
    return 0 if all(p.first_audio_s for p in phases) else 1
