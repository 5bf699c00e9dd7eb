import { describe, expect, it } from "vitest";
import { agentReducer, initialAgentState, type AgentAction } from "./agentState";

const run = (actions: AgentAction[], from = initialAgentState) => actions.reduce(agentReducer, from);

describe("agentReducer", () => {
  // Mirrored copies never reach the reducer (seqFilter drops them by seq), so every final
  // is a turn of its own, whatever its text.
  it("shows a final transcript repeated with the same text twice (the user said it twice)", () => {
    const s = run([
      { kind: "transcript", text: "yes", final: true },
      { kind: "transcript", text: "yes", final: true },
    ]);
    expect(s.history).toEqual([
      { role: "user", text: "yes" },
      { role: "user", text: "yes" },
    ]);
  });

  it("keeps a repeated utterance that came with its own interim", () => {
    const s = run([
      { kind: "transcript", text: "yes", final: true },
      { kind: "transcript", text: "ye", final: false },
      { kind: "transcript", text: "yes", final: true },
    ]);
    expect(s.history.map((h) => h.text)).toEqual(["yes", "yes"]);
    expect(s.interimTranscript).toBe("");
  });

  it("shows a repeated identical reply twice", () => {
    const reply = { kind: "reply", text: "Sure.", final: true, interrupted: false, spokenText: null } as const;
    const s = run([reply, reply]);
    expect(s.history).toEqual([
      { role: "agent", text: "Sure." },
      { role: "agent", text: "Sure." },
    ]);
  });

  it("typed text shows at once and its server echo is not shown again; later ones are", () => {
    const s = run([
      { kind: "userText", text: " yes " },
      { kind: "transcript", text: "yes", final: true }, // the server's echo
      { kind: "transcript", text: "yes", final: true }, // then said aloud
    ]);
    expect(s.history.map((h) => h.text)).toEqual(["yes", "yes"]);
    expect(s.pendingEcho).toEqual([]);
  });

  it("an echo consumes the typed texts before it whose turn never started", () => {
    const s = run([
      { kind: "userText", text: "one" },
      { kind: "userText", text: "two" },
      { kind: "transcript", text: "two", final: true }, // "one" was cut short by "two"
      { kind: "transcript", text: "one", final: true }, // spoken: a turn of its own
    ]);
    expect(s.history.map((h) => h.text)).toEqual(["one", "two", "one"]);
    expect(s.pendingEcho).toEqual([]);
  });

  it("a new connection expects no echo of the old one's typed text", () => {
    const s = run([
      { kind: "userText", text: "hello" },
      { kind: "connecting" },
      { kind: "transcript", text: "hello", final: true },
    ]);
    expect(s.history.map((h) => h.text)).toEqual(["hello", "hello"]);
  });

  it("shows every error, the same one again too", () => {
    const error = { code: "provider_error", message: "boom" };
    let s = run([{ kind: "error", error }, { kind: "clearError" }]);
    expect(s.error).toBeNull();
    s = run([{ kind: "error", error }], s);
    expect(s.error).toEqual(error);
  });

  it("a failure keeps the history and sets the error", () => {
    const s = run([
      { kind: "transcript", text: "hi", final: true },
      { kind: "failed", error: { code: "connection_lost", message: "gone" } },
    ]);
    expect(s.connectionStatus).toBe("failed");
    expect(s.history).toHaveLength(1);
    expect(s.error?.code).toBe("connection_lost");
  });

  it("a server status cannot revive a disconnected session", () => {
    const s = run([{ kind: "status", connection: "connected", processing: "listening" }]);
    expect(s.connectionStatus).toBe("disconnected");
    expect(s.processingStatus).toBe("listening");
  });
});
