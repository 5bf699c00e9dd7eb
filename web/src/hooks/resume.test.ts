import { act, renderHook } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { useVoiceAgentWebRTC, type VoiceAgentOptions } from "./useVoiceAgentWebRTC";
import { historyFromResumed, RESUME_TOKEN_KEY, ResumeTokens, type TokenStorage } from "./resume";
import { FakePeerConnection, FakeWebSocket, fakeEnv } from "../test/fakes";

const flush = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

class MemoryStorage implements TokenStorage {
  items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
  get token(): string | null {
    return this.getItem(RESUME_TOKEN_KEY);
  }
}

const server = (ws: FakeWebSocket, msg: unknown) => act(() => ws.serverSend(msg));

function setup(storage: TokenStorage | null, extra: Partial<VoiceAgentOptions> = {}) {
  const env = fakeEnv({ resumeStorage: storage, reconnect: { baseDelayMs: 100, maxAttempts: 5 }, ...extra });
  const hook = renderHook(() => useVoiceAgentWebRTC(env.options));
  return { env, result: hook.result };
}

/** The socket opens and the session starts with this resume token (no WebRTC answer needed). */
async function establish(ws: FakeWebSocket, sessionId: string, token?: string) {
  await act(async () => {
    ws.serverOpen();
    await flush();
  });
  server(ws, { type: "connection_established", session_id: sessionId, status: "connected", resume_token: token, seq: 1 });
}

const resumes = (ws: FakeWebSocket) => ws.messages().filter((m) => m.type === "resume");

describe("ResumeTokens", () => {
  it("keeps a session's token once it has a turn, the held one until the server answered", () => {
    const storage = new MemoryStorage();
    const tokens = new ResumeTokens(storage);
    expect(tokens.established("t1")).toBeNull(); // nothing held
    expect(storage.token).toBeNull(); // nothing said yet: nothing to resume
    tokens.turnFinished();
    expect(storage.token).toBe("t1");
    expect(tokens.established("t2")).toBe("t1"); // a new session: resume t1
    expect(storage.token).toBe("t1"); // until the answer (a drop now resumes t1 again)
    tokens.resumed("t2");
    expect(storage.token).toBe("t2");
    expect(tokens.established("t3")).toBe("t2");
    tokens.failed(); // expired: the new session is a new conversation
    expect(storage.token).toBeNull();
    tokens.turnFinished();
    expect(storage.token).toBe("t3");
    tokens.forget();
    expect(storage.token).toBeNull();
  });

  it("does nothing with a server that has no resume, or a storage that refuses", () => {
    const storage = new MemoryStorage();
    storage.setItem(RESUME_TOKEN_KEY, "old");
    const tokens = new ResumeTokens(storage);
    expect(tokens.established(undefined)).toBeNull();
    expect(storage.token).toBe("old");
    const refusing: TokenStorage = {
      getItem: () => {
        throw new Error("denied");
      },
      setItem: () => {
        throw new Error("denied");
      },
      removeItem: () => {
        throw new Error("denied");
      },
    };
    const t = new ResumeTokens(refusing);
    expect(t.established("t1")).toBeNull();
    expect(() => t.forget()).not.toThrow();
    expect(new ResumeTokens(null).established("t1")).toBeNull();
  });

  it("maps the resumed conversation to the page's history", () => {
    expect(
      historyFromResumed([
        { role: "user", text: "My name is Ada." },
        { role: "assistant", text: "Hello Ada.", interrupted: false },
        { role: "assistant", text: "Once", interrupted: true, full_text: "Once upon a time." },
        { role: "system", text: "no" },
        { role: "user" },
        "junk",
      ]),
    ).toEqual([
      { role: "user", text: "My name is Ada." },
      { role: "agent", text: "Hello Ada." },
      { role: "agent", text: "Once", interrupted: true, fullText: "Once upon a time." },
    ]);
    expect(historyFromResumed(null)).toEqual([]);
  });
});

describe("useVoiceAgentWebRTC resumes its conversation", () => {
  afterEach(() => vi.useRealTimers());

  it("after an unexpected drop it reconnects with backoff and sends the token it holds", async () => {
    vi.useFakeTimers();
    const storage = new MemoryStorage();
    const s = setup(storage);
    act(() => s.result.current.connect());
    const ws = FakeWebSocket.last();
    await establish(ws, "s-1", "token-1");
    expect(resumes(ws)).toEqual([]); // a first conversation: nothing to resume
    await act(async () => {
      FakePeerConnection.last().finishGathering();
      await flush();
    });
    act(() => s.result.current.sendText("My name is Ada."));
    server(ws, { type: "transcript", text: "My name is Ada.", final: true, seq: 2 });
    server(ws, { type: "ai_response", text: "Hello", final: false, seq: 3 });
    expect(storage.token).toBeNull(); // the server saves a conversation once a turn ends
    server(ws, { type: "ai_response", text: "Hello Ada.", final: true, seq: 4 });
    expect(storage.token).toBe("token-1");

    act(() => ws.serverClose(1006)); // the worker died
    expect(s.result.current.connectionStatus).toBe("connecting");
    act(() => vi.advanceTimersByTime(100));
    const ws2 = FakeWebSocket.last();
    expect(ws2).not.toBe(ws);
    await establish(ws2, "s-2", "token-2");
    expect(resumes(ws2)).toEqual([{ type: "resume", token: "token-1" }]);
    expect(storage.token).toBe("token-1"); // not yet answered

    server(ws2, {
      type: "resumed",
      resume_token: "token-2",
      history: [
        { role: "user", text: "My name is Ada.", interrupted: false },
        { role: "assistant", text: "Hello Ada.", interrupted: false },
      ],
      seq: 2,
    });
    expect(storage.token).toBe("token-2");
    expect(s.result.current.sessionId).toBe("s-2");
    expect(s.result.current.connectionStatus).toBe("connected");
    // The page already showed the conversation: it stays as it was, once.
    expect(s.result.current.history.map((h) => h.text)).toEqual(["My name is Ada.", "Hello Ada."]);
    expect(s.result.current.error).toBeNull();

    // A second drop before anything was said: the new token resumes it.
    act(() => ws2.serverClose(1006));
    act(() => vi.advanceTimersByTime(100));
    const ws3 = FakeWebSocket.last();
    await establish(ws3, "s-3", "token-3");
    expect(resumes(ws3)).toEqual([{ type: "resume", token: "token-2" }]);
  });

  it("a reloaded page shows the conversation the server resumed", async () => {
    const storage = new MemoryStorage();
    storage.setItem(RESUME_TOKEN_KEY, "token-1");
    const s = setup(storage);
    expect(s.result.current.history).toEqual([]);
    act(() => s.result.current.connect());
    const ws = FakeWebSocket.last();
    await establish(ws, "s-2", "token-2");
    expect(resumes(ws)).toEqual([{ type: "resume", token: "token-1" }]);
    server(ws, {
      type: "resumed",
      resume_token: "token-2",
      history: [
        { role: "user", text: "Tell me a story." },
        { role: "assistant", text: "Once upon", interrupted: true, full_text: "Once upon a time." },
      ],
      seq: 2,
    });
    expect(s.result.current.history).toEqual([
      { role: "user", text: "Tell me a story." },
      { role: "agent", text: "Once upon", interrupted: true, fullText: "Once upon a time." },
    ]);
    expect(storage.token).toBe("token-2");
  });

  it("resume_failed: a new conversation, kept once it has a turn; the session goes on", async () => {
    const storage = new MemoryStorage();
    storage.setItem(RESUME_TOKEN_KEY, "expired");
    const s = setup(storage);
    act(() => s.result.current.connect());
    const ws = FakeWebSocket.last();
    await establish(ws, "s-2", "token-2");
    server(ws, {
      type: "error",
      code: "resume_failed",
      message: "the resume token is unknown or expired: this is a new conversation",
      fatal: false,
      seq: 2,
    });
    expect(storage.token).toBeNull();
    expect(s.result.current.connectionStatus).toBe("connected");
    expect(s.result.current.error?.code).toBe("resume_failed");
    expect(s.result.current.history).toEqual([]);
    server(ws, { type: "ai_response", text: "Hi.", final: true, seq: 3 });
    expect(storage.token).toBe("token-2");
  });

  it("a drop before anything was said resumes nothing (and is told no failure)", async () => {
    vi.useFakeTimers();
    const storage = new MemoryStorage();
    const s = setup(storage);
    act(() => s.result.current.connect());
    const ws = FakeWebSocket.last();
    await establish(ws, "s-1", "token-1");
    act(() => ws.serverClose(1006));
    act(() => vi.advanceTimersByTime(100));
    const ws2 = FakeWebSocket.last();
    await establish(ws2, "s-2", "token-2");
    expect(resumes(ws2)).toEqual([]);
    expect(storage.token).toBeNull();
  });

  it("ending the conversation forgets the token; a server without resume gets no resume", async () => {
    const storage = new MemoryStorage();
    const s = setup(storage);
    act(() => s.result.current.connect());
    const first = FakeWebSocket.last();
    await establish(first, "s-1", "token-1");
    server(first, { type: "ai_response", text: "Hi.", final: true, seq: 2 });
    expect(storage.token).toBe("token-1");
    act(() => s.result.current.disconnect());
    expect(storage.token).toBeNull();

    storage.setItem(RESUME_TOKEN_KEY, "token-1");
    act(() => s.result.current.connect());
    const old = FakeWebSocket.last();
    await establish(old, "s-2"); // an older server: no resume_token
    expect(resumes(old)).toEqual([]);
    expect(storage.token).toBe("token-1");
  });
});
