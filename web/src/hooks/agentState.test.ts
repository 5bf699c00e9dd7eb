import { describe, expect, it } from "vitest";
import { agentReducer, initialAgentState, type AgentAction } from "./agentState";

const run = (actions: AgentAction[]) => actions.reduce(agentReducer, initialAgentState);

describe("agentReducer", () => {
  it("ignores a mirrored final transcript and a late interim after it", () => {
    const s = run([
      { kind: "transcript", text: "good", final: false, at: 0 },
      { kind: "transcript", text: "good morning", final: true, at: 10 },
      { kind: "transcript", text: "good", final: false, at: 12 },
      { kind: "transcript", text: "good morning", final: true, at: 14 },
    ]);
    expect(s.history).toEqual([{ role: "user", text: "good morning" }]);
    expect(s.interimTranscript).toBe("");
  });

  it("keeps a repeated utterance that came with its own interim", () => {
    const s = run([
      { kind: "transcript", text: "yes", final: true, at: 0 },
      { kind: "transcript", text: "ye", final: false, at: 2000 },
      { kind: "transcript", text: "yes", final: true, at: 2100 },
    ]);
    expect(s.history.map((h) => h.text)).toEqual(["yes", "yes"]);
  });

  it("a failure keeps the history and sets the error", () => {
    const s = run([
      { kind: "transcript", text: "hi", final: true, at: 0 },
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
