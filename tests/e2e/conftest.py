"""Browser end-to-end fixtures: the real server as a subprocess, headless Chromium with a WAV mic.

The server runs `voice-agent serve` with the default models on a free loopback port; Chromium
(Debian's, driven by the PyPI playwright driver) gets a fake microphone that loops a WAV file.
All WebRTC traffic stays on loopback: no ICE servers on either side, the server offers 127.0.0.1
only (webrtc.host_addresses) and Chromium may use loopback candidates.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.speech import speech_wav

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DIST_INDEX = WEB / "dist" / "index.html"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
VOICE_AGENT = ROOT / ".venv" / "bin" / "voice-agent"

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    # Plain host candidates instead of mDNS .local names (nothing resolves those here).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

# Keeps every RTCPeerConnection the page makes in window.__pcs, so the test can read getStats()
# and tap the remote audio without a debug hook in the page itself.
PC_SPY = """
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native || window.__pcs) return;
  window.__pcs = [];
  const Spy = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  Spy.prototype = Native.prototype;
  Object.setPrototypeOf(Spy, Native);
  window.RTCPeerConnection = Spy;
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


# -- prerequisites ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def web_dist() -> Path:
    """web/dist, built (or brought up to date) with `make web` when npm is available."""
    npm = shutil.which("npm")
    if npm is None:
        if not DIST_INDEX.is_file():
            pytest.skip("web/dist is missing and npm is not installed: cannot build the page "
                        "(install Node.js/npm, or run `make web` elsewhere and copy web/dist)")
        return DIST_INDEX.parent
    if shutil.which("make"):
        cmd, cwd = ["make", "web"], ROOT
    else:
        cmd, cwd = ["bash", "-c", "npm ci --no-audit --no-fund && npm run build"], WEB
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and DIST_INDEX.is_file(), (
        f"building the web page failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return DIST_INDEX.parent


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} needed for the fake microphone (apt-get install espeak-ng sox)")


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 kHz mono WAV the fake mic loops. 1.5 s of lead-in so the question is not spoken before
    the peer connection is up; 20 s of tail so the agent answers well before the repeat.
    espeak's default voice "en": after Chromium's audio processing (echo cancellation, noise
    suppression, AGC) Whisper hears the "en-us" voice as "the capital and friends"."""
    need_tools("espeak-ng", "sox")
    return speech_wav("What is the capital of France?",
                      tmp_path_factory.mktemp("mic") / "question.wav", rate=48000,
                      pad_before=1.5, pad_after=20.0, voice="en")


@pytest.fixture(scope="session")
def silent_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tools("sox")
    path = tmp_path_factory.mktemp("mic") / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(path), "trim", "0", "5"],
                   check=True)
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# -- the server ---------------------------------------------------------------------------------

@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    transcripts: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def page_url(self) -> str:
        """Where the browser opens the page: by name, as a user types it, so that the Host
        check (server/hosts.py) is exercised with its defaults."""
        return f"http://localhost:{self.port}"

    def get(self, path: str) -> Any:
        return http_json(self.url + path)

    def sessions(self) -> list[dict[str, Any]]:
        return list(self.get("/v3/sessions"))

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(no server log: {exc})"


@pytest.fixture(scope="session")
def server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not VOICE_AGENT.is_file():
        pytest.skip(f"{VOICE_AGENT} is missing: run `make install`")
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VOICE_AGENT_WEBRTC__HOST_ADDRESSES": '["127.0.0.1"]',
        "VOICE_AGENT_SERVER__TRANSCRIPTS_DIR": str(tmp / "transcripts"),
        # One thread each: Chromium shares the (2-core) machine; spinning llama.cpp threads
        # slow down badly under contention. Short replies keep the run time down.
        "VOICE_AGENT_AI__THREADS": "1",
        "VOICE_AGENT_STT__THREADS": "1",
        "VOICE_AGENT_AI__MAX_TOKENS": "60",
    }
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(VOICE_AGENT), "serve", "--port", str(port)], cwd=tmp, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = ServerProcess(proc, port, log, tmp / "transcripts")
    try:
        deadline = time.monotonic() + 240  # model loading + warm-up on a slow machine
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}):\n{running.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if running.get("/v3/health").get("status") in ("ok", "degraded"):
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not healthy within 240 s:\n{running.log_tail()}")
            time.sleep(0.3)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# -- the browser --------------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # lets fixtures see whether the test failed
    return report


LaunchBrowser = Callable[[Path], Awaitable[Any]]


@pytest.fixture
async def launch_browser(chromium_path: Path, tmp_path: Path, server: ServerProcess,
                         artifacts: Path, request: pytest.FixtureRequest
                         ) -> AsyncIterator[LaunchBrowser]:
    """Factory: a headless Chromium page whose microphone loops the given WAV file.

    On a failure, the visible page text, a screenshot and the server log tail are dumped.
    """
    from playwright.async_api import async_playwright

    pages: list[Any] = []
    console: list[str] = []
    async with async_playwright() as pw:
        contexts: list[Any] = []

        async def launch(wav: Path) -> Any:
            ctx = await pw.chromium.launch_persistent_context(
                str(tmp_path / f"profile{len(contexts)}"), executable_path=str(chromium_path),
                headless=True, ignore_default_args=["--mute-audio"],
                args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"],
                viewport={"width": 1280, "height": 860})
            contexts.append(ctx)
            ctx.set_default_timeout(15_000)
            await ctx.add_init_script(PC_SPY)
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
            pages.append(page)
            return page

        try:
            yield launch
        finally:
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                for i, page in enumerate(pages):
                    with contextlib.suppress(Exception):
                        print(f"--- page {i} visible text ---\n{await page.inner_text('body')}")
                        await page.screenshot(path=str(artifacts / f"failure-{request.node.name}-{i}.png"),
                                              full_page=True)
                print("--- browser console (last 40) ---\n" + "\n".join(console[-40:]))
                with contextlib.suppress(Exception):
                    print(f"--- /v3/sessions ---\n{server.sessions()}")
                print(f"--- server log tail ---\n{server.log_tail()}")
            for ctx in contexts:
                with contextlib.suppress(Exception):
                    await ctx.close()
