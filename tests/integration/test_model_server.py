"""`voice-agent model-server` as an operator runs it, and a worker's LLM talking to it.

A real subprocess on a free loopback port with the tiny SmolLM2 (the plumbing, not the
answers); the worker side is the project's own ``ai.provider = "openai"`` service, as a worker
of the model tier uses it (docs/model-tier.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tests.integration.conftest import free_port, make_config
from voice_agent.core.messages import ChatMessage
from voice_agent.services.llm_openai import OpenAICompatibleLLM

pytestmark = pytest.mark.models

CLI = str(Path(sys.executable).with_name("voice-agent"))
MODEL = "smollm2-135m"
SLOTS = 2
LONG = "Write a long story about a dog named Max."
"""SmolLM2 writes hundreds of tokens to this: two replies overlap for sure."""


@dataclass
class ModelServer:
    proc: subprocess.Popen[str]
    port: int
    ready_line: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _read_lines(out: IO[str], lines: list[str]) -> None:
    """The process's stdout, line by line, until it ends; stop() then reads the rest with
    communicate(), which closes the pipe under this reader (a ValueError, not a failure)."""
    with contextlib.suppress(ValueError):
        lines.extend(iter(out.readline, ""))


def start(*args: str, port: int, timeout: float = 60.0) -> ModelServer:
    """Start the command and wait for its ready line (the test fails with its stderr if the
    process ends or stays silent)."""
    proc = subprocess.Popen([CLI, "model-server", "--model", MODEL, "--port", str(port),
                             "--threads", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines: list[str] = []
    out = proc.stdout
    assert out is not None
    threading.Thread(target=_read_lines, args=(out, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [line for line in lines if "ready at" in line]
        if ready:
            return ModelServer(proc, port, ready[0].strip())
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    _out, err = proc.communicate(timeout=10)
    pytest.fail(f"model-server did not get ready (rc {proc.returncode}): {''.join(lines)}{err}")


def stop(server: ModelServer, sig: int = signal.SIGTERM) -> tuple[int, str]:
    server.proc.send_signal(sig)
    try:
        _out, err = server.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        raise
    return server.proc.returncode, err


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServer]:
    server = start("--parallel", str(SLOTS), port=free_port())
    yield server
    if server.proc.poll() is None:
        stop(server)


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def worker_llm(server: ModelServer, **ai: object) -> OpenAICompatibleLLM:
    """The LLM of a worker pointed at the model server, as docs/model-tier.md configures it."""
    config = make_config(ai={"provider": "openai", "base_url": f"{server.url}/v1",
                             "remote_model": MODEL, "max_tokens": 16, "temperature": 0.0, **ai})
    llm = OpenAICompatibleLLM(config)
    llm.load()
    return llm


def test_ready_line_names_the_url_model_and_slots(model_server: ModelServer) -> None:
    line = model_server.ready_line
    assert f"{model_server.url}/v1" in line and MODEL in line and f"{SLOTS} slots" in line
    assert f"VOICE_AGENT_AI__REMOTE_MODEL={MODEL}" in line
    assert get_json(f"{model_server.url}/health") == {"status": "ok"}
    models = get_json(f"{model_server.url}/v1/models")
    assert MODEL in json.dumps(models)


async def test_a_worker_streams_a_reply_through_the_openai_provider(
        model_server: ModelServer) -> None:
    llm = worker_llm(model_server)
    messages = [ChatMessage("system", "You are a helpful assistant."),
                ChatMessage("user", "What is the capital of France?")]
    pieces = [piece async for piece in llm.stream(messages)]
    text = "".join(str(p) for p in pieces)
    assert len(pieces) > 1, pieces  # streamed, not one block
    assert text.strip(), pieces


async def test_two_workers_are_answered_at_once(model_server: ModelServer) -> None:
    """Continuous batching over the slots: both replies have their first piece before either
    ends (one slot would write the second only after the first)."""
    llm = worker_llm(model_server, max_tokens=60)
    firsts: list[float] = []
    ends: list[float] = []

    async def reply(name: str) -> None:
        messages = [ChatMessage("user", f"{LONG} ({name})")]
        first = True
        async for _piece in llm.stream(messages):
            if first:
                firsts.append(time.monotonic())
                first = False
        ends.append(time.monotonic())

    await asyncio.wait_for(asyncio.gather(reply("a"), reply("b")), 60)
    assert len(firsts) == 2 and max(firsts) < min(ends), (firsts, ends)


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        done = subprocess.run([CLI, "model-server", "--model", MODEL, "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"port {port}" in done.stderr and "already in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - t0 < 20  # told before any model is loaded


def test_bad_values_are_clear_errors() -> None:
    for args, words in ((["--port", "0"], "--port must be 1-65535"),
                        (["--host", "10.255.255.1"], "not an address of this machine"),
                        (["--model", "nope"], "invalid choice")):
        done = subprocess.run([CLI, "model-server", "--model", MODEL, *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, args
        assert words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_sigterm_stops_it_with_exit_0() -> None:
    server = start("--parallel", "1", "--no-warmup", port=free_port())
    rc, err = stop(server, signal.SIGTERM)
    assert rc == 0, err
    assert "Traceback" not in err
    with pytest.raises(OSError):  # the port is closed
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
