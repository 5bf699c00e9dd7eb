import { act, fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { V3Dashboard } from "./V3Dashboard";
import { FakePeerConnection, FakeWebSocket, fakeEnv } from "../test/fakes";

const flush = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

describe("V3Dashboard", () => {
  it("renders statuses and toggles the conversation with the start button", async () => {
    const env = fakeEnv();
    render(<V3Dashboard agentOptions={env.options} />);
    const button = screen.getByTestId("start-button");
    expect(button.getAttribute("aria-pressed")).toBe("false");
    expect(button.textContent).toContain("Start conversation");
    expect(screen.getByTestId("connection-status").dataset.status).toBe("disconnected");
    expect(screen.getByTestId("processing-status").textContent).toContain("Idle");
    expect((screen.getByTestId("send-button") as HTMLButtonElement).disabled).toBe(true);

    fireEvent.click(button);
    expect(button.getAttribute("aria-pressed")).toBe("true");
    expect(button.textContent).toContain("End conversation");
    expect(screen.getByTestId("connection-status").textContent).toContain("Connecting");

    const ws = FakeWebSocket.last();
    await act(async () => {
      ws.serverOpen();
      await flush();
      FakePeerConnection.last().finishGathering();
      await flush();
    });
    act(() => ws.serverSend({ type: "connection_established", session_id: "abc-123", status: "connected" }));
    expect(screen.getByTestId("connection-status").dataset.status).toBe("connected");
    expect(screen.getByTestId("session-id").textContent).toBe("abc-123");

    act(() => {
      ws.serverSend({ type: "status", connection_status: "connected", processing_status: "listening" });
      ws.serverSend({ type: "transcript", text: "hello", final: true });
      ws.serverSend({ type: "transcript", text: "how are", final: false });
      ws.serverSend({ type: "ai_response", text: "Hi there", final: false });
      ws.serverSend({ type: "metrics", turn: 1, end_of_speech_to_first_audio_ms: 640, stt_ms: 110 });
    });
    expect(screen.getByTestId("processing-status").textContent).toContain("Listening");
    expect(screen.getByTestId("transcript-final").textContent).toBe("hello");
    expect(screen.getByTestId("transcript-interim").textContent).toBe("how are");
    expect(screen.getByTestId("transcript-interim").className).toContain("interim");
    expect(screen.getByTestId("ai-response").textContent).toBe("Hi there");
    expect(screen.getByTestId("history").textContent).toContain("hello");
    expect(screen.getByTestId("latency").textContent).toContain("640 ms");
    expect(screen.getByTestId("latency").textContent).toContain("Speech to text");
    expect(screen.getByTestId("mic-level")).toBeTruthy();

    // Typed message goes out as a text message.
    fireEvent.change(screen.getByTestId("text-input"), { target: { value: "what time is it" } });
    fireEvent.click(screen.getByTestId("send-button"));
    expect(ws.messages().at(-1)).toEqual({ type: "text", text: "what time is it" });
    expect((screen.getByTestId("text-input") as HTMLInputElement).value).toBe("");

    fireEvent.click(button);
    expect(button.getAttribute("aria-pressed")).toBe("false");
    expect(screen.getByTestId("connection-status").dataset.status).toBe("disconnected");
    expect(ws.messages().at(-1)).toEqual({ type: "end" });
  });

  it("shows an error banner whose retry reconnects", async () => {
    const env = fakeEnv();
    render(<V3Dashboard agentOptions={env.options} />);
    fireEvent.click(screen.getByTestId("start-button"));
    act(() => FakeWebSocket.last().serverClose(4401, "invalid token"));
    const banner = screen.getByTestId("error-banner");
    expect(banner.textContent).toContain("invalid token");
    expect(screen.getByTestId("connection-status").dataset.status).toBe("failed");
    fireEvent.click(screen.getByRole("button", { name: /retry/i }));
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(screen.queryByTestId("error-banner")).toBeNull();
    expect(screen.getByTestId("connection-status").dataset.status).toBe("connecting");
  });
  it("shows a busy refusal with the retry hint, and retry opens a new session", async () => {
    const env = fakeEnv();
    render(<V3Dashboard agentOptions={env.options} />);
    fireEvent.click(screen.getByTestId("start-button"));
    const ws = FakeWebSocket.last();
    await act(async () => {
      ws.serverOpen();
      await flush();
    });
    // The server's refusal, exactly as docs/protocol.md gives it, then close 1013.
    act(() => {
      ws.serverSend({
        type: "error",
        code: "busy",
        fatal: true,
        message: "the server is busy: all 2 conversation slots are taken; try again in 10 s",
        retry_after_s: 10,
        capacity: 2,
        active_sessions: 2,
      });
      ws.serverClose(1013, "busy");
    });
    const banner = screen.getByTestId("error-banner");
    expect(banner.dataset.code).toBe("busy");
    expect(banner.className).toContain("is-busy");
    expect(screen.getByTestId("busy-title").textContent).toBe("The server is busy");
    expect(screen.getByTestId("busy-hint").textContent).toBe("Try again in about 10 s.");
    expect(banner.textContent).toContain("all 2 conversation slots are taken");
    expect(screen.getByTestId("connection-status").dataset.status).toBe("failed");
    expect(screen.getByTestId("start-button").getAttribute("aria-pressed")).toBe("false");
    expect(FakeWebSocket.instances).toHaveLength(1); // no reconnect on its own

    fireEvent.click(screen.getByRole("button", { name: /retry/i }));
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(screen.queryByTestId("error-banner")).toBeNull();
    expect(screen.getByTestId("connection-status").dataset.status).toBe("connecting");
  });

  it("shows the older server_busy code as busy too", async () => {
    const env = fakeEnv();
    render(<V3Dashboard agentOptions={env.options} />);
    fireEvent.click(screen.getByTestId("start-button"));
    const ws = FakeWebSocket.last();
    await act(async () => {
      ws.serverOpen();
      await flush();
    });
    act(() => ws.serverSend({ type: "error", code: "server_busy", fatal: true, message: "server busy: 4 sessions already active" }));
    expect(screen.getByTestId("busy-title").textContent).toBe("The server is busy");
    expect(screen.getByTestId("busy-hint").textContent).toBe("Try again in a moment.");
  });
});
