// Map a parsed server event that only changes UI state to a reducer action.
import type { AgentAction } from "./agentState";
import type { ServerMessage } from "../types";

type Msg = ServerMessage & Record<string, unknown>;

/** The action for transcript / ai_response / tool_call / status / metrics / non-fatal error;
 * else null. */
export function eventToAction(msg: Msg): AgentAction | null {
  switch (msg.type) {
    case "transcript":
      return { kind: "transcript", text: String(msg.text ?? ""), final: msg.final === true };
    case "ai_response":
      return {
        kind: "reply",
        text: String(msg.text ?? ""),
        final: msg.final === true,
        interrupted: msg.interrupted === true,
        spokenText: typeof msg.spoken_text === "string" ? msg.spoken_text : null,
      };
    case "tool_call":
      return {
        kind: "tool",
        tool: {
          name: String(msg.name ?? "tool"),
          arguments: typeof msg.arguments === "string" ? msg.arguments : "{}",
          result: String(msg.result ?? ""),
          ok: msg.ok !== false,
          latencyMs: typeof msg.latency_ms === "number" ? msg.latency_ms : null,
        },
      };
    case "status":
      return {
        kind: "status",
        connection: typeof msg.connection_status === "string" ? msg.connection_status : undefined,
        processing: typeof msg.processing_status === "string" ? msg.processing_status : undefined,
      };
    case "metrics": {
      const { type: _type, ...metrics } = msg;
      return { kind: "metrics", metrics };
    }
    case "error":
      return {
        kind: "error",
        error: { code: String(msg.code ?? "error"), message: String(msg.message ?? "Unknown error") },
      };
    default:
      return null;
  }
}
