"""The deployment of issue #17 on loopback, for ``voice-agent bench latency --cluster N``.

One redis-server (the shared registry), one ``voice-agent model-server`` (the LLM over the
OpenAI API, llama.cpp's own server), N ``voice-agent serve`` workers using it
(``ai.provider=openai``), and HAProxy in front, health-checked on /v3/health and weighted by
each worker's agent-check answer (server/lb_agent.py), as deploy/haproxy.cfg does. The bench's
clients talk to HAProxy only; each session's media then flows to the worker that answered its
offer, as in production.

It quacks like :class:`bench.server_proc.ServerProcess` (``base_url``, ``start``, ``stop``,
``cpu_s``, ``memory_kb``, ``ready_s``, ``last_log``), so the latency bench runs the same sessions
against it and against one process in the same run: the figures compare on one machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from voice_agent.core.config import ServerConfig

from .redis_proc import RedisServer
from .server_proc import (ServerProcess, free_port, log_tail, proc_cpu_s, proc_status_kb,
                          stop_process)

READY_TIMEOUT_S = 300.0
HAPROXY_CFG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
"""The deployment's own balancer config, run here with loopback addresses in its env vars."""
WORKERS = 2
"""deploy/haproxy.cfg names two workers, as docker-compose.yml runs them."""


def _command(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("voice-agent")
    return ([str(exe)] if exe.exists() else [sys.executable, "-m", "voice_agent.cli"]) + list(args)


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log: Path,
               ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(url).status_code in ok:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {READY_TIMEOUT_S:.0f} s:\n{log_tail(log)}")


@dataclass
class ClusterProcess:
    """Redis, a model server, ``workers`` workers and HAProxy; ``base_url`` is HAProxy's."""

    env_overrides: dict[str, str]
    config_file: str | None = None
    workers: int = WORKERS
    max_sessions: int | None = None
    """The cluster's capacity (server.max_sessions across the workers); None: each worker's
    capacity times the workers."""
    mode: str = "cluster"
    ready_s: float | None = None
    last_log: str = ""
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _workers: list[ServerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="va-bench-cluster-")
        self.folder = Path(self._tmp.name)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.mode = f"cluster ({self.workers} workers)"
        self.redis = RedisServer(self.folder)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None
               ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.folder / f"{name}.log"
        proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                                stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(proc)
        return proc, log

    def start(self) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise RuntimeError("haproxy is not installed: run scripts/install-system.sh --test")
        t0 = time.monotonic()
        self.redis.start()
        llm_port = free_port()
        cfg = [] if self.config_file is None else ["--config", self.config_file]
        model, model_log = self._spawn("model-server", _command(
            *cfg, "model-server", "--host", "127.0.0.1", "--port", str(llm_port)),
            self.env_overrides)
        _wait_http(f"http://127.0.0.1:{llm_port}/health", model, "the model server", model_log)
        env = {**self.env_overrides,
               "VOICE_AGENT_SERVER__REDIS_URL": self.redis.url,
               "VOICE_AGENT_AI__PROVIDER": "openai",
               "VOICE_AGENT_AI__BASE_URL": f"http://127.0.0.1:{llm_port}/v1"}
        # Each worker keeps its own capacity (its default or the environment's) and the cluster
        # takes that many per worker in all (server.worker_max_sessions, max_sessions).
        per_worker = (self.env_overrides.get("VOICE_AGENT_SERVER__WORKER_MAX_SESSIONS")
                      or self.env_overrides.get("VOICE_AGENT_SERVER__MAX_SESSIONS")
                      or os.environ.get("VOICE_AGENT_SERVER__MAX_SESSIONS")
                      or str(ServerConfig().max_sessions))
        env["VOICE_AGENT_SERVER__WORKER_MAX_SESSIONS"] = per_worker
        env["VOICE_AGENT_SERVER__MAX_SESSIONS"] = str(
            self.max_sessions or int(per_worker) * self.workers)
        lb_env = {"HAPROXY_BIND": f"127.0.0.1:{self.port}",
                  "HAPROXY_STATS_BIND": f"127.0.0.1:{free_port()}",
                  "HAPROXY_ADMIN_SOCKET": str(self.folder / "haproxy.sock")}
        for i in range(self.workers):
            agent = free_port()
            worker = ServerProcess("streaming", {
                **env, "VOICE_AGENT_SERVER__WORKER_ID": f"worker{i + 1}",
                "VOICE_AGENT_SERVER__LB_AGENT_PORT": str(agent)},
                config_file=self.config_file, max_sessions=None)
            self._workers.append(worker)
            worker.start()  # one at a time: two model loads at once on 2 cores take longer
            lb_env[f"WORKER{i + 1}"] = f"127.0.0.1:{worker.port}"
            lb_env[f"WORKER{i + 1}_AGENT_PORT"] = str(agent)
        lb, lb_log = self._spawn("haproxy", [haproxy, "-db", "-f", str(HAPROXY_CFG)], lb_env)
        _wait_http(self.base_url + "/v3/health", lb, "haproxy", lb_log)
        time.sleep(4.5)  # HAProxy's first health checks and agent weights (2 s apart)
        self.ready_s = time.monotonic() - t0

    def pids(self) -> list[int]:
        procs = [*self._procs, *(w.proc for w in self._workers if w.proc is not None)]
        if self.redis.proc is not None:
            procs.append(self.redis.proc)
        return [p.pid for p in procs if p.poll() is None]

    def cpu_s(self) -> float:
        """CPU seconds of every process of the cluster together."""
        return sum(proc_cpu_s(pid) for pid in self.pids())

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM summed over the cluster's processes."""
        out: dict[str, int] = {}
        for pid in self.pids():
            for key, kb in proc_status_kb(pid).items():
                out[key] = out.get(key, 0) + kb
        return out

    def stop(self) -> None:
        logs = []
        # The balancer first (no new sessions), then the workers (their sessions close), then
        # the model server they use.
        for proc in self._procs[1:]:
            stop_process(proc)
        for worker in self._workers:
            worker.stop()
        for proc in self._procs[:1]:
            stop_process(proc)
            logs.append(f"--- {worker.env_overrides.get('VOICE_AGENT_SERVER__WORKER_ID')}\n"
                        f"{worker.last_log}")
        for log in sorted(self.folder.glob("*.log")):
            logs.append(f"--- {log.stem}\n{log_tail(log, 60)}")
        self.redis.stop()
        self.last_log = "\n".join(logs)
        self._tmp.cleanup()
