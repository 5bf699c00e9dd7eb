"""A real uvicorn server on 127.0.0.1 running in the tests' event loop, with the real models.

The models load once per test session; each server made here shares them. All WebRTC traffic
stays on loopback: no ICE servers on either side and aioice offers 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
import websockets
from aiortc import RTCSessionDescription

from voice_agent.transport.ice import restrict_host_addresses
from tests.helpers.rtc import PcmPlayerTrack, TrackRecorder, new_peer
from tests.helpers.redis_server import RedisServer, running_redis
from tests.helpers.speech import read_wav, speech_wav
from voice_agent.core.audio_io import resample_to_16k
from voice_agent.core.config import V3Config
from voice_agent.server.app import create_app
from voice_agent.server.runner import uvicorn_config
from voice_agent.services.factory import Services, build_services, load_services
from voice_agent.services.llm_llamacpp import LlamaCppLLM

QUESTION = "What is the capital of France?"
TRANSCRIPTS = Path(tempfile.gettempdir()) / f"voice-agent-test-transcripts-{os.getpid()}"
"""Where test servers write conversations (never the working directory)."""


@pytest.fixture(scope="session", autouse=True)
def loopback_ice() -> Iterator[None]:
    with restrict_host_addresses(["127.0.0.1"]):
        yield


@pytest.fixture(scope="session", autouse=True)
def transcripts_cleanup() -> Iterator[None]:
    yield
    shutil.rmtree(TRANSCRIPTS, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(**sections: Any) -> V3Config:
    # One thread each: on a shared 2-core machine llama.cpp's spinning threads slow down 10-20x
    # as soon as anything else runs (measured: a one-sentence reply took 16 s with 2 threads).
    # Audio is not paced to real time here (audio_speed): the tests send recordings at once;
    # test_server_ws_audio.py checks the pacing itself, with the default.
    base: dict[str, Any] = {"server": {"max_sessions": 4, "transcripts_dir": str(TRANSCRIPTS),
                                       "audio_speed": 1000.0},
                            "ai": {"max_tokens": 60, "threads": 1}, "stt": {"threads": 1}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return V3Config(**base)


@pytest.fixture(scope="session")
async def services() -> AsyncIterator[Services]:
    svc = build_services(make_config())
    await load_services(svc, warmup=True)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def llm(config: V3Config) -> Iterator[LlamaCppLLM]:
    """A loaded, warmed-up local LLM of the requesting module's own ``config`` (a module that
    needs other sampling or models than the suite's shared ``services``)."""
    service = LlamaCppLLM(config)
    service.load()
    service.warmup()
    yield service
    service.close()


@dataclass
class RunningServer:
    app: Any
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def registry(self) -> Any:
        return self.app.state.registry

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 15)


async def start_server(config: V3Config, services: Services) -> RunningServer:
    port = free_port()
    config = config.model_copy(update={"server": config.server.model_copy(update={"port": port})})
    app = create_app(config, services)
    # The production settings (connection limits, ws_max_size, graceful timeout), on loopback.
    server = uvicorn.Server(uvicorn_config(app, config, log_level="warning"))
    task = asyncio.get_running_loop().create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.02)
    return RunningServer(app, port, server, task)


@pytest.fixture(scope="session")
async def server(services: Services) -> AsyncIterator[RunningServer]:
    running = await start_server(make_config(), services)
    yield running
    await running.stop()


@pytest.fixture(scope="session")
async def server_factory(services: Services) -> AsyncIterator[
        Callable[..., Awaitable[RunningServer]]]:
    started: list[RunningServer] = []

    async def make(**sections: Any) -> RunningServer:
        running = await start_server(make_config(**sections), services)
        started.append(running)
        return running

    yield make
    for running in started:
        await running.stop()


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(QUESTION, tmp_path_factory.mktemp("speech") / "question.wav", rate=48000,
                      pad_before=0.5, pad_after=1.5)


@pytest.fixture(scope="session")
def question_pcm(question_wav: Path) -> tuple[np.ndarray, int]:
    return read_wav(question_wav)


# -- a signaling client -------------------------------------------------------------------------

@dataclass
class Client:
    ws: Any
    messages: list[dict[str, Any]] = field(default_factory=list)
    binary: list[tuple[float, bytes]] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    close_code: int | None = None

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                if isinstance(raw, bytes):
                    self.binary.append((time.monotonic(), raw))
                else:
                    self.messages.append(json.loads(raw))
                self._new.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self._new.set()

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                       start: int = 0) -> dict[str, Any]:
        """The first message from index ``start`` on that matches."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages[start:]:
                if predicate(msg):
                    return msg
            if self._reader is not None and self._reader.done():
                raise AssertionError(f"socket closed ({self.close_code}); got {self.messages}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {[m.get('type') for m in self.messages]}"
                                     f" last: {self.messages[-3:]}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def wait_type(self, kind: str, timeout: float = 10.0, start: int = 0,
                        **fields: Any) -> dict[str, Any]:
        return await self.wait_for(
            lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items()),
            timeout, start)

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 5)


@contextlib.asynccontextmanager
async def connect(url: str, **kw: Any) -> AsyncIterator[Client]:
    ws = await websockets.connect(url, max_size=None, **kw)
    client = Client(ws)
    client.start()
    try:
        yield client
    finally:
        await client.close()


@dataclass
class RtcClient:
    """The browser's side: a peer with a microphone track and a recorder of the agent's voice."""

    pc: Any
    mic: PcmPlayerTrack
    recorder: list[TrackRecorder]
    channel: Any = None
    channel_messages: list[dict[str, Any]] = field(default_factory=list)

    async def close(self) -> None:
        for rec in self.recorder:
            await rec.stop()
        await self.pc.close()


async def negotiate(client: Client, *, data_channel: bool = False, audio: bool = True,
                    wait_connected: bool = True) -> RtcClient:
    pc = new_peer()
    rtc = RtcClient(pc, PcmPlayerTrack(), [])
    if audio:
        pc.addTrack(rtc.mic)
        pc.on("track", lambda t: rtc.recorder.append(TrackRecorder(t)))
    if data_channel:
        rtc.channel = pc.createDataChannel("events")
        rtc.channel.on("message", lambda m: rtc.channel_messages.append(json.loads(m)))
    await pc.setLocalDescription(await pc.createOffer())
    start = len(client.messages)
    await client.send({"type": "offer", "sdp": pc.localDescription.sdp})
    answer = await client.wait_type("answer", 10, start)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    if wait_connected:
        deadline = time.monotonic() + 10
        while pc.connectionState != "connected":
            assert time.monotonic() < deadline, f"not connected: {pc.connectionState}"
            await asyncio.sleep(0.02)
        if data_channel:
            while rtc.channel.readyState != "open":
                assert time.monotonic() < deadline, "data channel did not open"
                await asyncio.sleep(0.02)
    return rtc


def to_16k_float(pcm48: np.ndarray) -> np.ndarray:
    """48 kHz int16 -> 16 kHz float32 for the STT service."""
    return resample_to_16k(pcm48, 48000)


def speech_only(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Trim the silence around a recording (the track sends silence between replies)."""
    win = rate // 50
    n = len(pcm) // win
    if n == 0:
        return pcm
    energy = np.sqrt((pcm[:n * win].astype(np.float32).reshape(n, win) / 32768) ** 2).mean(1)
    loud = np.nonzero(energy > 0.003)[0]
    if not len(loud):
        return pcm[:0]
    return pcm[max(0, loud[0] - 5) * win:(loud[-1] + 5) * win]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own (tests/helpers/redis_server.py)."""
    with running_redis(tmp_path) as server:
        yield server
