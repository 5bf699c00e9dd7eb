"""The dashboard in a real (headless) Chromium against the real server and models.

The browser's microphone loops a spoken "What is the capital of France?"; the test checks what a
user would see and hear: connection, transcript, reply, the agent's audio arriving, latency, then
stop and start again.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from .conftest import LaunchBrowser, ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.models]

CONNECT_S = 30
REPLY_S = 120  # STT + LLM + TTS on a 2-core machine shared with Chromium

# -- page probes (the PC_SPY init script keeps the page's peer connections in window.__pcs) -----

JS_PC_STATE = "() => { const p = (window.__pcs || []).at(-1); return p ? p.connectionState : null; }"

JS_INBOUND_AUDIO = """async () => {
  const pc = (window.__pcs || []).at(-1);
  if (!pc) return null;
  const stats = await pc.getStats();
  for (const r of stats.values()) {
    if (r.type === "inbound-rtp" && r.kind === "audio")
      return {packets: r.packetsReceived ?? 0, samples: r.totalSamplesReceived ?? 0,
              lost: r.packetsLost ?? 0, jitter: r.jitter ?? null};
  }
  return null;
}"""

JS_SELECTED_PAIR = """async () => {
  const pc = (window.__pcs || []).at(-1);
  const stats = await pc.getStats();
  const byId = new Map([...stats.values()].map((r) => [r.id, r]));
  for (const r of stats.values()) {
    if (r.type === "transport" && r.selectedCandidatePairId) {
      const pair = byId.get(r.selectedCandidatePairId);
      return {local: byId.get(pair.localCandidateId)?.address,
              remote: byId.get(pair.remoteCandidateId)?.address,
              answer: pc.remoteDescription ? pc.remoteDescription.sdp : ""};
    }
  }
  return null;
}"""

# An AnalyserNode on the agent's track; keeps the loudest level seen in window.__remoteLevel.
JS_TAP_REMOTE = """() => {
  const pc = (window.__pcs || []).at(-1);
  const track = pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === "audio");
  if (!track) return false;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  const level = (window.__remoteLevel = {peak: 0, rms: 0, state: ctx.state});
  window.__remoteTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0, peak = 0;
    for (const v of buf) { sum += v * v; peak = Math.max(peak, Math.abs(v)); }
    level.peak = Math.max(level.peak, peak);
    level.rms = Math.max(level.rms, Math.sqrt(sum / buf.length));
    level.state = ctx.state;
  }, 40);
  void ctx.resume();
  return true;
}"""


# The loudest reading of the page's own microphone meter, kept in window.__micMax.
JS_WATCH_MIC_LEVEL = """() => {
  window.__micMax = 0;
  setInterval(() => {
    const el = document.querySelector("[data-testid=mic-level]");
    window.__micMax = Math.max(window.__micMax, Number(el?.dataset.level ?? 0));
  }, 50);
}"""


async def wait_until(probe: Any, ok: Any, timeout: float, what: str, step: float = 0.25) -> Any:
    """Poll ``await probe()`` until ``ok(value)``; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await probe()
        if ok(value):
            return value
        await asyncio.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {value!r})")


async def sessions(server: ServerProcess) -> list[dict[str, Any]]:
    return await asyncio.to_thread(server.sessions)


async def connect(page: Page, server: ServerProcess, previous: str | None = None) -> str:
    """Press start; wait for connected (page, server and peer connection). Returns the id."""
    button = page.get_by_test_id("start-button")
    await expect(button).to_have_attribute("aria-pressed", "false")
    await button.click()
    await expect(page.get_by_test_id("connection-status")).to_have_attribute(
        "data-status", "connected", timeout=CONNECT_S * 1000)
    await expect(page.get_by_test_id("session-id")).not_to_have_text(
        re.compile(r"^(none)?$"), timeout=5000)
    sid = (await page.get_by_test_id("session-id").inner_text()).strip()
    assert sid != previous, "a new start must open a new session"
    listed = await wait_until(lambda: sessions(server), lambda s: any(x["session_id"] == sid for x in s),
                              10, f"session {sid} in GET /v3/sessions")
    assert len(listed) == 1, listed
    await wait_until(lambda: page.evaluate(JS_PC_STATE), lambda s: s == "connected", CONNECT_S,
                     "RTCPeerConnection connected")
    return sid


async def stop(page: Page, server: ServerProcess) -> None:
    button = page.get_by_test_id("start-button")
    await expect(button).to_have_attribute("aria-pressed", "true")
    await button.click()
    await expect(page.get_by_test_id("connection-status")).to_have_attribute(
        "data-status", "disconnected")
    await wait_until(lambda: sessions(server), lambda s: s == [], 10,
                     "GET /v3/sessions empty after stop")


async def test_voice_conversation(launch_browser: LaunchBrowser, server: ServerProcess,
                                  question_wav: Path, artifacts: Path) -> None:
    page = await launch_browser(question_wav)
    await page.goto(server.page_url + "/")
    await expect(page.get_by_test_id("connection-status")).to_have_attribute(
        "data-status", "disconnected")
    await page.evaluate(JS_WATCH_MIC_LEVEL)
    first = await connect(page, server)

    pair = await page.evaluate(JS_SELECTED_PAIR)
    assert await page.evaluate(JS_TAP_REMOTE), "no remote audio track on the peer connection"

    # The spoken question, then the reply.
    await expect(page.get_by_test_id("transcript-final")).to_contain_text(
        re.compile(r"capital.*France", re.I), timeout=REPLY_S * 1000)
    await expect(page.get_by_test_id("ai-response")).to_contain_text(
        re.compile("Paris", re.I), timeout=REPLY_S * 1000)
    mic_max = await page.evaluate("() => window.__micMax")
    assert mic_max > 10, f"the microphone meter never moved (max {mic_max}%)"

    # The agent's voice reaches the browser: RTP packets, decoded samples and a non-silent level.
    stats = await wait_until(lambda: page.evaluate(JS_INBOUND_AUDIO),
                             lambda s: bool(s) and s["packets"] > 0 and s["samples"] > 0, 10,
                             "inbound-rtp audio")
    await asyncio.sleep(1.0)
    later = await page.evaluate(JS_INBOUND_AUDIO)
    assert later["samples"] > stats["samples"], f"samples not growing: {stats} -> {later}"
    level = await wait_until(lambda: page.evaluate("() => window.__remoteLevel"),
                             lambda v: v["peak"] > 0.05 and v["rms"] > 0.005, 30,
                             "audible agent voice on the AnalyserNode")
    assert level["state"] == "running", level
    print(f"inbound audio {later}; remote level {level}; mic meter max {mic_max}%")

    # Latency: the turn's stage timings are shown ("512 ms", "1.42 s").
    await expect(page.get_by_test_id("latency")).to_contain_text(
        re.compile(r"\d+ ms"), timeout=REPLY_S * 1000)
    headline = (await page.get_by_test_id("latency-value").inner_text()).strip()
    await page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(artifacts / "dashboard-phone.png"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 860})

    # Stop ends the session on the server; start again opens a new one.
    await stop(page, server)
    await expect(page.get_by_test_id("error-banner")).to_have_count(0)
    second = await connect(page, server, previous=first)
    assert second != first
    await stop(page, server)

    # Everything stayed on loopback: the server offered 127.0.0.1 only (webrtc.host_addresses).
    assert pair is not None, "no selected ICE candidate pair"
    offered = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", pair["answer"], re.M)
    assert offered and set(offered) == {"127.0.0.1"}, f"server ICE candidates: {offered}"
    assert pair["remote"] == "127.0.0.1", pair

    # The headline figure, end of speech to first audio ("850 ms" or "1.42 s"), not "n/a".
    assert re.fullmatch(r"\d+(\.\d+)? (ms|s)", headline), f"latency headline: {headline!r}"


async def test_typed_message(launch_browser: LaunchBrowser, server: ServerProcess,
                             silent_wav: Path) -> None:
    page = await launch_browser(silent_wav)  # a silent mic: no voice turn gets in the way
    await page.goto(server.page_url + "/")
    await connect(page, server)
    question = "What is the capital of Italy?"
    await page.get_by_test_id("text-input").fill(question)
    await page.get_by_test_id("send-button").click()
    await expect(page.get_by_test_id("text-input")).to_have_value("")
    history = page.get_by_test_id("history")
    await expect(history.locator("[data-role=user]").last).to_contain_text(question)
    await expect(history.locator("[data-role=agent]").last).to_contain_text(
        re.compile(r"\w+"), timeout=REPLY_S * 1000)
    reply = (await page.get_by_test_id("ai-response").inner_text()).strip()
    assert reply, "the reply text is empty"
    await stop(page, server)
