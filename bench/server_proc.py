"""The server under test, as a subprocess: `voice-agent serve` on 127.0.0.1 and a free port.

It is a separate process so that its memory (VmHWM/VmRSS) and CPU time are its own, and so that the
client's event loop never competes with the server's inside one interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of ``pid`` in kB (empty if the process is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key.startswith("Vm") and rest.strip().endswith("kB"):
                out[key] = int(rest.split()[0])
    return out


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine spent busy so far (from /proc/stat)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a process's log file ("" when it is gone)."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGINT (a graceful shutdown), then SIGTERM, then SIGKILL; each bounded."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class ServerProcess:
    mode: str
    env_overrides: dict[str, str]
    config_file: str | None = None
    max_sessions: int | None = 4
    """The server's capacity; None: the server's own (its default, the config file, or
    VOICE_AGENT_SERVER__MAX_SESSIONS in this process's environment)."""
    ready_timeout_s: float = 300.0
    keep_log: Path | None = None
    """Where the whole server log is copied when the server stops (for a failed soak)."""

    def __post_init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None
        self.last_log = ""  # the log's tail, kept when the temp dir goes
        self._tmp = tempfile.TemporaryDirectory(prefix="va-bench-server-")
        self.log_path = Path(self._tmp.name) / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        exe = Path(sys.executable).with_name("voice-agent")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "voice_agent.cli"]
        if self.config_file:
            cmd += ["--config", self.config_file]
        return cmd + ["serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self) -> None:
        tmp = Path(self._tmp.name)
        env = dict(os.environ)
        env.update({
            "HF_HUB_OFFLINE": "1",
            # ICE on loopback only: the server's aioice offers just these host addresses.
            "VOICE_AGENT_WEBRTC__HOST_ADDRESSES": '["127.0.0.1"]',
            "VOICE_AGENT_PIPELINE__MODE": self.mode,
            "VOICE_AGENT_SERVER__TRANSCRIPTS_DIR": str(tmp / "transcripts"),
            # INFO unless the caller asks for more (DEBUG: each model call's timings).
            "VOICE_AGENT_LOG_LEVEL": os.environ.get("VOICE_AGENT_LOG_LEVEL", "INFO"),
        })
        if self.max_sessions is not None:
            env["VOICE_AGENT_SERVER__MAX_SESSIONS"] = str(self.max_sessions)
        if self.mode == "naive":
            # The baseline transcribes as faster-whisper does by default (30 s window): the
            # shorter window is one of the streaming pipeline's own speed-ups.
            env["VOICE_AGENT_STT__FAST_WINDOW_S"] = "0"
        env.update(self.env_overrides)
        t0 = time.monotonic()
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(t0)

    def _wait_ready(self, t0: float) -> None:
        """Poll /v3/health until it says ok; the lifespan loads and warms the models first."""
        deadline = t0 + self.ready_timeout_s
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    r = http.get(self.base_url + "/v3/health")
                    if r.status_code == 200 and r.json().get("status") in ("ok", "degraded"):
                        self.ready_s = time.monotonic() - t0
                        return
                time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"server not ready after {self.ready_timeout_s:.0f} s:\n{tail}")

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def memory_kb(self) -> dict[str, int]:
        return proc_status_kb(self.pid) if self.proc is not None else {}

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid) if self.proc is not None else 0.0

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT (uvicorn's graceful shutdown), then SIGTERM, then SIGKILL; each bounded."""
        stop_process(self.proc, timeout_s)
        self.last_log = self.log_tail(200)
        if self.keep_log is not None and self.log_path.is_file():
            shutil.copyfile(self.log_path, self.keep_log)
        self._tmp.cleanup()


class ServedRun(Protocol):
    """What a bench run records about the server it ran against."""
    server_ready_s: float | None
    server_error: str
    load: list[float]


@contextlib.asynccontextmanager
async def serving(run: ServedRun, env: dict[str, str],
                  config_file: str | None = None) -> AsyncIterator[ServerProcess]:
    """A streaming server for the block's turns; the 1-minute load average before and after
    it, and the server's failure (the block's exception) recorded in ``run``, not raised: the
    report says what went wrong, with the server log's tail on stderr."""
    server = ServerProcess("streaming", env, config_file=config_file)
    run.load.append(round(os.getloadavg()[0], 2))
    print(f"starting the server on {server.base_url} ...", flush=True)
    try:
        await asyncio.to_thread(server.start)
        run.server_ready_s = round(server.ready_s or 0, 1)
        yield server
        run.load.append(round(os.getloadavg()[0], 2))
    except Exception as exc:
        run.server_error = f"{type(exc).__name__}: {exc}"
        print(f"error: {run.server_error}", file=sys.stderr, flush=True)
    finally:
        await asyncio.to_thread(server.stop)
        if run.server_error and server.last_log:
            print(server.last_log[-3000:], file=sys.stderr)
