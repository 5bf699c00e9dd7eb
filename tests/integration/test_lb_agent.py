"""The agent check of a real server, and the real HAProxy (deploy/haproxy.cfg) in front of two
workers: health-checked on /v3/health, weighted by their agents, WebSockets through it.

The workers run the real app and server (GracefulServer, the production uvicorn settings) with
the scripted fake models: what is tested is the balancing, not the conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.fakes import fake_services
from tests.integration.conftest import connect, free_port, make_config
from voice_agent.server.app import create_app
from voice_agent.server.registry import AppRegistry, get_registry
from voice_agent.server.runner import GracefulServer, uvicorn_config

HAPROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"


@dataclass
class Worker:
    server: GracefulServer
    task: asyncio.Task[None]
    port: int
    agent_port: int

    @property
    def registry(self) -> AppRegistry:
        return get_registry(self.server.config.app)

    async def stop(self) -> None:
        self.server.should_exit = True
        async with asyncio.timeout(15):
            await self.task


async def start_worker(**server: Any) -> Worker:
    port, agent_port = free_port(), free_port()
    config = make_config(server={"port": port, "lb_agent_port": agent_port, **server})
    app = create_app(config, fake_services())
    gs = GracefulServer(uvicorn_config(app, config, log_level="warning"), app,
                        lb_agent_port=config.server.lb_agent_port)
    task = asyncio.get_running_loop().create_task(gs.serve())
    deadline = time.monotonic() + 20
    while not gs.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "worker did not start"
        await asyncio.sleep(0.02)
    return Worker(gs, task, port, agent_port)


@contextlib.asynccontextmanager
async def workers(count: int, **server: Any) -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for _ in range(count):
            started.append(await start_worker(**server))
        yield started
    finally:
        # Last started first: each uvicorn server restores the signal handlers it replaced.
        for worker in reversed(started):
            await worker.stop()


async def agent_line(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(5):
            return (await reader.read()).decode("ascii")
    finally:
        writer.close()


async def test_a_worker_answers_its_load_on_the_agent_port_for_as_long_as_it_serves() -> None:
    async with workers(1, max_sessions=2) as (worker,):
        assert await agent_line(worker.agent_port) == "up ready 100%\n"
        session = worker.registry.sessions.create()
        assert await agent_line(worker.agent_port) == "up ready 50%\n"
        worker.registry.sessions.create()
        assert await agent_line(worker.agent_port) == "up drain\n"
        await worker.registry.sessions.close(session.id)
        assert await agent_line(worker.agent_port) == "up ready 50%\n"
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{worker.port}/v3/health")).json()
        assert health["load"] == 0.5  # the figure the agent's 50% came from
    with pytest.raises(OSError):  # stopped with the server
        await agent_line(worker.agent_port)


# -- the real HAProxy ----------------------------------------------------------------------------

class HAProxy:
    """``haproxy -db -f deploy/haproxy.cfg`` with its addresses set through the environment
    variables the file reads, and its runtime API on a Unix socket."""

    def __init__(self, folder: Path, backends: list[Worker]) -> None:
        self.port = free_port()
        self.socket = folder / "admin.sock"
        self.log = folder / "haproxy.log"
        env = {**os.environ, "HAPROXY_BIND": f"127.0.0.1:{self.port}",
               "HAPROXY_STATS_BIND": f"127.0.0.1:{free_port()}",
               "HAPROXY_ADMIN_SOCKET": str(self.socket)}
        for i, worker in enumerate(backends, 1):
            env[f"WORKER{i}"] = f"127.0.0.1:{worker.port}"
            env[f"WORKER{i}_AGENT_PORT"] = str(worker.agent_port)
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(HAPROXY_CFG)], env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def command(self, line: str) -> str:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the workers backend: each server's status (UP, DRAIN, DOWN, ...)
        and weight."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows
                if r["pxname"] == "workers" and r["svname"] not in ("BACKEND", "FRONTEND")}

    async def until(self, want: dict[str, tuple[str, str]], timeout: float = 20.0) -> None:
        """Wait until each named server has (status, weight)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                # "DRAIN (agent)": the first word is the state.
                seen = {name: (row["status"].split(" ")[0], row["weight"])
                        for name, row in self.servers().items()}
                if all(seen.get(name) == value for name, value in want.items()):
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"haproxy's servers: {seen}, wanted {want}\n"
                             f"{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists()
                                         else None)
    if binary is None:
        pytest.skip("haproxy is not installed (scripts/install-system.sh --test installs it)")
    return binary


@contextlib.contextmanager
def running_haproxy(folder: Path, backends: list[Worker]) -> Iterator[HAProxy]:
    proxy = HAProxy(folder, backends)
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_haproxy_weights_the_workers_by_their_agents_and_tunnels_the_websocket(
        haproxy_binary: str, tmp_path: Path) -> None:
    async with workers(2, max_sessions=2) as (w1, w2):
        with running_haproxy(tmp_path, [w1, w2]) as proxy:
            # Both healthy (GET /v3/health 200 with Host: localhost) at full weight.
            await proxy.until({"worker1": ("UP", "100"), "worker2": ("UP", "100")})
            async with httpx.AsyncClient() as http:
                health = await http.get(f"http://127.0.0.1:{proxy.port}/v3/health")
            assert health.status_code == 200

            # One of worker1's two slots taken: its agent halves its weight.
            taken = w1.registry.sessions.create()
            await proxy.until({"worker1": ("UP", "50"), "worker2": ("UP", "100")})
            # Full: drained, no new connection goes there.
            w1.registry.sessions.create()
            await proxy.until({"worker1": ("DRAIN", "50"), "worker2": ("UP", "100")})

            # A conversation's signaling socket through HAProxy lands on the worker with
            # room, and stays open there (the session is pinned by its connection).
            async with connect(f"ws://127.0.0.1:{proxy.port}/ws/v3") as client:
                await client.wait_type("connection_established")
                assert (len(w1.registry.sessions), len(w2.registry.sessions)) == (2, 1)
                await proxy.until({"worker2": ("UP", "50")})
                await client.send({"type": "ping"})
                await client.wait_type("pong")

            # Room again on worker1: back in the pool.
            await w1.registry.sessions.close(taken.id)
            await proxy.until({"worker1": ("UP", "50")})
