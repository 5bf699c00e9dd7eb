import { act, renderHook } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { useVoiceAgentWebRTC, type VoiceAgentOptions } from "./useVoiceAgentWebRTC";
import { buildSignalingUrl } from "./connectionUtils";
import { FakePeerConnection, FakeWebSocket, fakeEnv } from "../test/fakes";

const flush = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

function setup(extra: Partial<VoiceAgentOptions> = {}) {
  const env = fakeEnv(extra);
  const hook = renderHook(() => useVoiceAgentWebRTC(env.options));
  return { env, hook, result: hook.result };
}

/** connect -> ws open -> gathering done -> connection_established -> answer. */
async function connectFully(s: ReturnType<typeof setup>) {
  act(() => s.result.current.connect());
  const ws = FakeWebSocket.last();
  await act(async () => {
    ws.serverOpen();
    await flush();
  });
  const pc = FakePeerConnection.last();
  await act(async () => {
    pc.finishGathering();
    await flush();
  });
  act(() =>
    ws.serverSend({ type: "connection_established", session_id: "s-1", status: "connected", version: "3.0.0", seq: 1 }),
  );
  await act(async () => {
    ws.serverSend({ type: "answer", sdp: "v=0 answer", seq: 2 });
    await flush();
  });
  return { ws, pc, dc: pc.channels[0]! };
}

/** The server's next messages after connectFully: numbered from 3, as the session does. */
function numbered() {
  let seq = 2;
  return <T extends object>(msg: T) => ({ ...msg, seq: ++seq });
}

const server = (ws: FakeWebSocket, msg: unknown) => act(() => ws.serverSend(msg));

describe("useVoiceAgentWebRTC", () => {
  afterEach(() => vi.useRealTimers());

  it("connects: signaling URL, microphone, peer connection, offer, answer", async () => {
    const s = setup({ token: "secret" });
    expect(s.result.current.connectionStatus).toBe("disconnected");
    act(() => s.result.current.connect());
    expect(s.result.current.connectionStatus).toBe("connecting");
    const ws = FakeWebSocket.last();
    expect(ws.url).toBe("ws://test.local/ws/v3?token=secret");

    await act(async () => {
      ws.serverOpen();
      await flush();
    });
    expect(s.env.getUserMedia).toHaveBeenCalledWith({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
    const pc = FakePeerConnection.last();
    expect(pc.config).toEqual({ iceServers: [] });
    expect(pc.tracks).toHaveLength(1);
    expect(pc.channels.map((c) => c.label)).toEqual(["events"]);
    expect(ws.messages()).toEqual([]); // waits for ICE gathering

    await act(async () => {
      pc.finishGathering();
      await flush();
    });
    expect(ws.messages()).toEqual([{ type: "offer", sdp: "v=0 fake-offer+candidates" }]);

    server(ws, { type: "connection_established", session_id: "s-1", status: "connected", version: "3.0.0" });
    expect(s.result.current.connectionStatus).toBe("connected");
    expect(s.result.current.sessionId).toBe("s-1");
    expect(s.result.current.version).toBe("3.0.0");

    await act(async () => {
      ws.serverSend({ type: "answer", sdp: "v=0 answer" });
      await flush();
    });
    expect(pc.remoteDescription).toEqual({ type: "answer", sdp: "v=0 answer" });
    expect(s.result.current.connectionStatus).toBe("connected");
  });

  it("goes connected on the answer alone", async () => {
    const s = setup();
    act(() => s.result.current.connect());
    const ws = FakeWebSocket.last();
    await act(async () => {
      ws.serverOpen();
      await flush();
      FakePeerConnection.last().finishGathering();
      await flush();
      ws.serverSend({ type: "answer", sdp: "v=0 answer" });
      await flush();
    });
    expect(s.result.current.connectionStatus).toBe("connected");
  });

  it("trickles ICE candidates, ending with null, and queues remote ones until the answer", async () => {
    const s = setup({ trickleIce: true });
    act(() => s.result.current.connect());
    const ws = FakeWebSocket.last();
    await act(async () => {
      ws.serverOpen();
      await flush();
    });
    const pc = FakePeerConnection.last();
    expect(ws.messages()).toEqual([{ type: "offer", sdp: "v=0 fake-offer" }]);
    const cand = { candidate: "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0 };
    act(() => {
      pc.emitCandidate(cand);
      pc.emitCandidate(null);
    });
    expect(ws.messages().slice(1)).toEqual([
      { type: "ice-candidate", candidate: cand },
      { type: "ice-candidate", candidate: null },
    ]);
    const remote = { candidate: "candidate:2 1 udp 1 127.0.0.1 6000 typ host", sdpMid: "0", sdpMLineIndex: 0 };
    server(ws, { type: "ice-candidate", candidate: remote });
    expect(pc.remoteCandidates).toEqual([]);
    await act(async () => {
      ws.serverSend({ type: "answer", sdp: "v=0 answer" });
      await flush();
    });
    expect(pc.remoteCandidates).toEqual([remote]);
  });

  it("shows interim and final transcripts", async () => {
    const s = setup();
    const { ws } = await connectFully(s);
    server(ws, { type: "transcript", text: "what is", final: false });
    expect(s.result.current.interimTranscript).toBe("what is");
    expect(s.result.current.transcript).toBe("");
    server(ws, { type: "transcript", text: "what is the time", final: true });
    expect(s.result.current.transcript).toBe("what is the time");
    expect(s.result.current.interimTranscript).toBe("");
    expect(s.result.current.history).toEqual([{ role: "user", text: "what is the time" }]);
  });

  it("streams ai_response and appends the final reply once, though mirrored on the data channel", async () => {
    const s = setup();
    const { ws, dc } = await connectFully(s);
    const n = numbered();
    const interims = ["It is", "It is ten"].map((text) => n({ type: "ai_response", text, final: false }));
    for (const msg of interims) {
      server(ws, msg);
      act(() => dc.serverSend(msg));
    }
    expect(s.result.current.aiResponse).toBe("It is ten");
    expect(s.result.current.history).toEqual([]);
    const final = n({ type: "ai_response", text: "It is ten o'clock.", final: true });
    server(ws, final);
    act(() => dc.serverSend(interims[1])); // a late mirrored interim: dropped by its seq
    act(() => dc.serverSend(final));
    expect(s.result.current.aiResponse).toBe("It is ten o'clock.");
    expect(s.result.current.history).toEqual([{ role: "agent", text: "It is ten o'clock." }]);
  });

  it("drops the mirrored copy of an event by its seq alone", async () => {
    const s = setup();
    const { ws, dc } = await connectFully(s);
    const error = numbered()({ type: "error", code: "stt", message: "one", fatal: false });
    server(ws, error);
    act(() => s.result.current.clearError());
    act(() => dc.serverSend(error));
    expect(s.result.current.error).toBeNull();
    // The copy may come first on the data channel: then the WebSocket's is the one dropped.
    act(() => dc.serverSend({ ...error, seq: 4 }));
    server(ws, { ...error, seq: 4 });
    act(() => s.result.current.clearError());
    server(ws, { ...error, seq: 4 });
    expect(s.result.current.error).toBeNull();
  });

  it("shows a repeated identical final transcript with a new seq twice, each once though mirrored", async () => {
    const s = setup();
    const { ws, dc } = await connectFully(s);
    const n = numbered();
    for (const msg of [n({ type: "transcript", text: "yes", final: true }), n({ type: "transcript", text: "yes", final: true })]) {
      server(ws, msg);
      act(() => dc.serverSend(msg));
    }
    expect(s.result.current.history).toEqual([
      { role: "user", text: "yes" },
      { role: "user", text: "yes" },
    ]);
  });

  it("uses a lower seq not seen yet: a reply on one channel overtaken on the other", async () => {
    const s = setup();
    const { ws, dc } = await connectFully(s);
    const pong = { type: "pong", server_time: 1, seq: 3 }; // the WebSocket's own
    const transcript = { type: "transcript", text: "hello", final: true, seq: 4 }; // mirrored
    const error = { type: "error", code: "invalid_json", message: "bad", fatal: false, seq: 5 }; // the data channel's own
    act(() => dc.serverSend(transcript));
    act(() => dc.serverSend(error));
    server(ws, pong);
    server(ws, transcript);
    expect(s.result.current.history).toEqual([{ role: "user", text: "hello" }]);
    expect(s.result.current.error).toEqual({ code: "invalid_json", message: "bad" });
  });

  it("a new connection is a new session: its numbers start afresh", async () => {
    vi.useFakeTimers();
    const s = setup({ reconnect: { baseDelayMs: 100, maxAttempts: 5 } });
    const { ws } = await connectFully(s);
    server(ws, { type: "transcript", text: "first", final: true, seq: 3 });
    act(() => ws.serverClose(1006));
    act(() => vi.advanceTimersByTime(100));
    const ws2 = FakeWebSocket.last();
    expect(ws2).not.toBe(ws);
    await act(async () => {
      ws2.serverOpen();
      await flush();
    });
    server(ws2, { type: "connection_established", session_id: "s-2", status: "connected", seq: 1 });
    server(ws2, { type: "transcript", text: "second", final: true, seq: 3 });
    expect(s.result.current.sessionId).toBe("s-2");
    expect(s.result.current.history.map((h) => h.text)).toEqual(["first", "second"]);
  });

  it("records an interrupted reply with what was heard", async () => {
    const s = setup();
    const { ws } = await connectFully(s);
    server(ws, { type: "ai_response", text: "Once upon a", final: false });
    server(ws, {
      type: "ai_response",
      text: "Once upon a time there was a fox.",
      final: true,
      interrupted: true,
      spoken_text: "Once upon",
    });
    expect(s.result.current.history).toEqual([
      { role: "agent", text: "Once upon", interrupted: true, fullText: "Once upon a time there was a fox." },
    ]);
  });

  it("applies status events", async () => {
    const s = setup();
    const { ws } = await connectFully(s);
    server(ws, { type: "status", connection_status: "connected", processing_status: "listening" });
    expect(s.result.current.processingStatus).toBe("listening");
    server(ws, { type: "status", connection_status: "connected", processing_status: "speaking" });
    expect(s.result.current.processingStatus).toBe("speaking");
    server(ws, { type: "status", processing_status: "bogus" });
    expect(s.result.current.processingStatus).toBe("speaking");
  });

  it("keeps the last metrics, extra fields included", async () => {
    const s = setup();
    const { ws } = await connectFully(s);
    server(ws, { type: "metrics", turn: 2, end_of_speech_to_first_audio_ms: 612, stt_ms: 120, extra_ms: 5 });
    expect(s.result.current.metrics).toEqual({ turn: 2, end_of_speech_to_first_audio_ms: 612, stt_ms: 120, extra_ms: 5 });
  });

  it("shows a non-fatal error and stays connected", async () => {
    const s = setup();
    const { ws, pc } = await connectFully(s);
    server(ws, { type: "error", code: "llm", message: "model timed out", fatal: false });
    expect(s.result.current.error).toEqual({ code: "llm", message: "model timed out" });
    expect(s.result.current.connectionStatus).toBe("connected");
    expect(pc.closed).toBe(false);
  });

  it("fails the connection on a fatal error without reconnecting", async () => {
    vi.useFakeTimers();
    const s = setup();
    const { ws, pc } = await connectFully(s);
    server(ws, { type: "error", code: "server_busy", message: "too many sessions", fatal: true });
    expect(s.result.current.connectionStatus).toBe("failed");
    expect(s.result.current.error).toEqual({ code: "server_busy", message: "too many sessions" });
    expect(pc.closed).toBe(true);
    expect(s.env.streams[0]!.tracks[0]!.stop).toHaveBeenCalled();
    act(() => ws.serverClose(1006));
    act(() => vi.advanceTimersByTime(60_000));
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("keeps the busy refusal's retry hint and does not reconnect after close 1013", async () => {
    vi.useFakeTimers();
    const s = setup({ reconnect: { baseDelayMs: 1000, maxAttempts: 5 } });
    const { ws } = await connectFully(s);
    server(ws, { type: "error", code: "busy", message: "full", fatal: true, retry_after_s: 10, capacity: 2 });
    expect(s.result.current.error).toEqual({ code: "busy", message: "full", retryAfterS: 10 });
    act(() => ws.serverClose(1013, "busy"));
    act(() => vi.advanceTimersByTime(60_000));
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("treats a bare close 1013 (its message lost on the way) as busy, not as a drop to retry", async () => {
    vi.useFakeTimers();
    const s = setup({ reconnect: { baseDelayMs: 1000, maxAttempts: 5 } });
    const { ws } = await connectFully(s);
    act(() => ws.serverClose(1013, ""));
    expect(s.result.current.connectionStatus).toBe("failed");
    expect(s.result.current.error?.code).toBe("busy");
    act(() => vi.advanceTimersByTime(60_000));
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("starts a fresh session when the server says the media connection is lost", async () => {
    vi.useFakeTimers();
    const s = setup({ reconnect: { baseDelayMs: 1000, maxAttempts: 5 } });
    const { ws, pc } = await connectFully(s);
    server(ws, { type: "error", code: "transport_failed", message: "the media connection was lost", fatal: false });
    expect(s.result.current.error?.code).toBe("transport_failed");
    expect(s.result.current.connectionStatus).toBe("connecting");
    expect(pc.closed).toBe(true);
    act(() => vi.advanceTimersByTime(1000));
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(s.env.getUserMedia).toHaveBeenCalledTimes(1); // the microphone is kept
  });

  it("reconnects with exponential backoff after an unexpected drop", async () => {
    vi.useFakeTimers();
    const s = setup({ reconnect: { baseDelayMs: 1000, maxDelayMs: 8000, maxAttempts: 5 } });
    const { ws, pc } = await connectFully(s);
    act(() => ws.serverClose(1006));
    expect(s.result.current.connectionStatus).toBe("connecting");
    expect(s.result.current.reconnectAttempt).toBe(1);
    expect(pc.closed).toBe(true);
    act(() => vi.advanceTimersByTime(999));
    expect(FakeWebSocket.instances).toHaveLength(1);
    act(() => vi.advanceTimersByTime(1));
    expect(FakeWebSocket.instances).toHaveLength(2);

    // Second drop before it ever opened: the delay doubles.
    act(() => FakeWebSocket.last().serverClose(1006));
    expect(s.result.current.reconnectAttempt).toBe(2);
    act(() => vi.advanceTimersByTime(1999));
    expect(FakeWebSocket.instances).toHaveLength(2);
    act(() => vi.advanceTimersByTime(1));
    expect(FakeWebSocket.instances).toHaveLength(3);

    // Success resets the counter; the microphone was kept across the retries.
    const ws3 = FakeWebSocket.last();
    await act(async () => {
      ws3.serverOpen();
      await flush();
    });
    server(ws3, { type: "connection_established", session_id: "s-2", status: "connected" });
    expect(s.result.current.connectionStatus).toBe("connected");
    expect(s.result.current.reconnectAttempt).toBe(0);
    expect(s.result.current.sessionId).toBe("s-2");
    expect(s.env.getUserMedia).toHaveBeenCalledTimes(1);
  });

  it("gives up after the last attempt and reports the failure", async () => {
    vi.useFakeTimers();
    const s = setup({ reconnect: { baseDelayMs: 100, maxAttempts: 2 } });
    const { ws } = await connectFully(s);
    act(() => ws.serverClose(1006));
    act(() => vi.advanceTimersByTime(100));
    act(() => FakeWebSocket.last().serverClose(1006));
    act(() => vi.advanceTimersByTime(200));
    act(() => FakeWebSocket.last().serverClose(1006));
    expect(FakeWebSocket.instances).toHaveLength(3);
    expect(s.result.current.connectionStatus).toBe("failed");
    expect(s.result.current.error?.code).toBe("connection_lost");
    expect(s.env.streams[0]!.tracks[0]!.stopped).toBe(true);
  });

  it("does not retry when the server refuses the connection (4xxx close)", async () => {
    vi.useFakeTimers();
    const s = setup();
    act(() => s.result.current.connect());
    act(() => FakeWebSocket.last().serverClose(4401, "unauthorized"));
    act(() => vi.advanceTimersByTime(60_000));
    expect(s.result.current.connectionStatus).toBe("failed");
    expect(s.result.current.error).toEqual({ code: "connection_refused", message: "unauthorized" });
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("disconnect tears everything down and does not reconnect", async () => {
    vi.useFakeTimers();
    const s = setup();
    const { ws, pc, dc } = await connectFully(s);
    act(() => s.result.current.disconnect());
    expect(ws.messages().at(-1)).toEqual({ type: "end" });
    expect(ws.closedWith).toBe(1000);
    expect(pc.closed).toBe(true);
    expect(dc.closed).toBe(true);
    expect(s.env.streams[0]!.tracks[0]!.stop).toHaveBeenCalled();
    expect(s.result.current.connectionStatus).toBe("disconnected");
    expect(s.result.current.localStream).toBeNull();
    act(() => ws.serverClose(1006));
    act(() => vi.advanceTimersByTime(60_000));
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(s.result.current.connectionStatus).toBe("disconnected");
  });

  it("unmounting tears down too", async () => {
    const s = setup();
    const { pc, ws } = await connectFully(s);
    s.hook.unmount();
    expect(pc.closed).toBe(true);
    expect(ws.closedWith).toBe(1000);
    expect(s.env.streams[0]!.tracks[0]!.stopped).toBe(true);
  });

  it("sendText sends the text message and records it once", async () => {
    const s = setup();
    const { ws } = await connectFully(s);
    let ok = false;
    act(() => {
      ok = s.result.current.sendText("  hello there ");
    });
    expect(ok).toBe(true);
    expect(ws.messages().at(-1)).toEqual({ type: "text", text: "hello there" });
    server(ws, { type: "transcript", text: "hello there", final: true }); // server echo
    expect(s.result.current.history).toEqual([{ role: "user", text: "hello there" }]);
    act(() => {
      ok = s.result.current.sendText("   ");
    });
    expect(ok).toBe(false);
  });

  it("interrupt and ping messages", async () => {
    vi.useFakeTimers();
    const s = setup({ pingIntervalMs: 1000 });
    const { ws } = await connectFully(s);
    act(() => s.result.current.interrupt());
    expect(ws.messages().at(-1)).toEqual({ type: "interrupt" });
    act(() => vi.advanceTimersByTime(1000));
    expect(ws.messages().at(-1)).toEqual({ type: "ping" });
  });

  it("setMuted disables the microphone track", async () => {
    const s = setup();
    await connectFully(s);
    const track = s.env.streams[0]!.tracks[0]!;
    act(() => s.result.current.setMuted(true));
    expect(track.enabled).toBe(false);
    expect(s.result.current.muted).toBe(true);
    act(() => s.result.current.setMuted(false));
    expect(track.enabled).toBe(true);
  });

  it("selectMicrophone switches the sent track to the chosen device", async () => {
    const s = setup();
    const { pc } = await connectFully(s);
    await act(async () => {
      await s.result.current.selectMicrophone("usb-mic");
    });
    expect(s.env.getUserMedia).toHaveBeenLastCalledWith({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, deviceId: { exact: "usb-mic" } },
      video: false,
    });
    expect(s.env.streams[0]!.tracks[0]!.stopped).toBe(true);
    expect(pc.tracks[0]).toBe(s.env.streams[1]!.tracks[0]);
    expect(s.result.current.microphoneId).toBe("usb-mic");
  });

  it("plays the remote track in an autoplay audio element", async () => {
    const s = setup();
    const { pc } = await connectFully(s);
    const remote = { id: "remote" } as unknown as MediaStream;
    act(() => pc.ontrack?.({ track: {}, streams: [remote] }));
    const el = document.querySelector<HTMLAudioElement>("[data-testid=remote-audio]");
    expect(el?.autoplay).toBe(true);
    expect(el?.srcObject).toBe(remote);
  });

  it("fails without retrying when the microphone is unavailable", async () => {
    const s = setup({
      getUserMedia: () => Promise.reject(new DOMException("Permission denied", "NotAllowedError")),
    });
    act(() => s.result.current.connect());
    await act(async () => {
      FakeWebSocket.last().serverOpen();
      await flush();
    });
    expect(s.result.current.connectionStatus).toBe("failed");
    expect(s.result.current.error).toEqual({
      code: "microphone_unavailable",
      message: "Microphone access was denied. Allow it in the browser, then retry.",
    });
    expect(FakeWebSocket.last().closedWith).toBe(1000);
  });
});

describe("buildSignalingUrl", () => {
  it("uses wss on https and the page's token", () => {
    const loc = { protocol: "https:", host: "agent.example:8443", search: "?token=abc" };
    expect(buildSignalingUrl(undefined, undefined, loc)).toBe("wss://agent.example:8443/ws/v3?token=abc");
    expect(buildSignalingUrl(undefined, undefined, { ...loc, protocol: "http:", search: "" })).toBe(
      "ws://agent.example:8443/ws/v3",
    );
  });
});
