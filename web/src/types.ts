// Wire format shared with the Python server (docs/protocol.md) and the hook's public state.

export type ConnectionStatus = "disconnected" | "connecting" | "connected" | "failed";
export type ProcessingStatus = "idle" | "listening" | "processing" | "speaking" | "error";

export const CONNECTION_STATUSES: readonly ConnectionStatus[] = [
  "disconnected",
  "connecting",
  "connected",
  "failed",
];
export const PROCESSING_STATUSES: readonly ProcessingStatus[] = [
  "idle",
  "listening",
  "processing",
  "speaking",
  "error",
];

export interface HistoryEntry {
  role: "user" | "agent" | "tool";
  text: string;
  interrupted?: boolean;
  /** For an interrupted reply: the whole text the model produced (text holds what was heard). */
  fullText?: string;
  /** For a tool call (role "tool"): what the model called and what it got back. */
  tool?: ToolCallInfo;
}

/** One tool call the model made (server event `tool_call`, docs/tools.md). */
export interface ToolCallInfo {
  name: string;
  /** The JSON text the model wrote. */
  arguments: string;
  /** What the model was told: the result, or "Error: ...". */
  result: string;
  ok: boolean;
  latencyMs: number | null;
}

/** Per-turn stage timings in ms; any extra numeric or string fields are kept. */
export interface TurnMetrics {
  turn?: number;
  end_of_speech_to_first_audio_ms?: number;
  voice_to_voice_ms?: number;
  stt_ms?: number;
  llm_first_token_ms?: number;
  tts_first_audio_ms?: number;
  first_audio_sent_ms?: number;
  [key: string]: unknown;
}

export interface AgentError {
  code: string;
  message: string;
  /** `busy` / `server_busy` refusals: seconds before a retry is worth making (server's hint). */
  retryAfterS?: number;
}

/** One message of a resumed conversation, as the server's `resumed` lists it. */
export interface ResumedEntry {
  role: "user" | "assistant";
  /** Of a reply the user cut: the part heard. */
  text: string;
  interrupted?: boolean;
  /** Of a reply the user cut: the whole reply. */
  full_text?: string;
}

// ---- Client -> server ----
export type ClientMessage =
  | { type: "offer"; sdp: string }
  | { type: "ice-candidate"; candidate: RTCIceCandidateInit | null }
  | { type: "text"; text: string }
  | { type: "interrupt" }
  | { type: "ping" }
  | { type: "end" }
  /** Carry on the conversation of an earlier session (docs/protocol.md, *Resuming*). */
  | { type: "resume"; token: string };

// ---- Server -> client (extra fields may appear) ----
export type ServerMessage =
  | {
      type: "connection_established";
      session_id: string;
      status?: string;
      version?: string;
      /** The secret that resumes this session's conversation later (servers with resume). */
      resume_token?: string;
    }
  | { type: "resumed"; resume_token: string; history: ResumedEntry[] }
  | { type: "answer"; sdp: string }
  | { type: "ice-candidate"; candidate: RTCIceCandidateInit | null }
  | { type: "transcript"; text: string; final: boolean }
  | {
      type: "ai_response";
      text: string;
      final: boolean;
      interrupted?: boolean;
      spoken_text?: string | null;
    }
  | { type: "status"; connection_status?: string; processing_status?: string }
  | ({ type: "metrics" } & TurnMetrics)
  | { type: "tool_call"; name: string; arguments: string; result: string; ok: boolean; latency_ms: number }
  | { type: "error"; code: string; message: string; fatal?: boolean }
  | { type: "pong" };

/** Parse one JSON frame; null when it is not an object with a string `type`. */
export function parseServerMessage(raw: unknown): (ServerMessage & Record<string, unknown>) | null {
  if (typeof raw !== "string") return null;
  try {
    const data: unknown = JSON.parse(raw);
    if (data && typeof data === "object" && typeof (data as { type?: unknown }).type === "string") {
      return data as ServerMessage & Record<string, unknown>;
    }
  } catch {
    /* not JSON: ignore */
  }
  return null;
}
