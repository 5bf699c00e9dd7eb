// Pure state machine for the voice agent: server events and local actions -> UI state.
// Events mirrored on the WebSocket and the data channel are dropped before they get here, by
// their `seq` (seqFilter.ts): every action reaching the reducer is a new event, so a final
// transcript repeated with the same text (the user said "yes" twice) is a second turn.
import {
  CONNECTION_STATUSES,
  PROCESSING_STATUSES,
  type AgentError,
  type ConnectionStatus,
  type HistoryEntry,
  type ProcessingStatus,
  type ToolCallInfo,
  type TurnMetrics,
} from "../types";

export interface AgentState {
  connectionStatus: ConnectionStatus;
  processingStatus: ProcessingStatus;
  sessionId: string | null;
  version: string | null;
  transcript: string;
  interimTranscript: string;
  aiResponse: string;
  history: HistoryEntry[];
  metrics: TurnMetrics | null;
  error: AgentError | null;
  /** Typed texts shown at once whose server echo (a final transcript) is still to come; not
   * part of the public API. */
  pendingEcho: string[];
}

export const initialAgentState: AgentState = {
  connectionStatus: "disconnected",
  processingStatus: "idle",
  sessionId: null,
  version: null,
  transcript: "",
  interimTranscript: "",
  aiResponse: "",
  history: [],
  metrics: null,
  error: null,
  pendingEcho: [],
};

export type AgentAction =
  | { kind: "connecting" }
  | { kind: "connected" }
  | { kind: "disconnected" }
  | { kind: "failed"; error?: AgentError }
  | { kind: "session"; sessionId: string; version: string | null }
  | { kind: "transcript"; text: string; final: boolean }
  | {
      kind: "reply";
      text: string;
      final: boolean;
      interrupted: boolean;
      spokenText: string | null;
    }
  | { kind: "status"; connection?: string; processing?: string }
  | { kind: "metrics"; metrics: TurnMetrics }
  | { kind: "tool"; tool: ToolCallInfo }
  | { kind: "error"; error: AgentError }
  | { kind: "clearError" }
  | { kind: "userText"; text: string }
  /** The server resumed an earlier conversation (`resumed`): its messages. */
  | { kind: "restored"; history: HistoryEntry[] };

function onTranscript(s: AgentState, a: Extract<AgentAction, { kind: "transcript" }>): AgentState {
  const text = a.text.trim();
  if (!a.final) return s.interimTranscript === text ? s : { ...s, interimTranscript: text };
  // The server's echo of a text typed here, already shown: consume it (and any typed text
  // before it whose turn never started, e.g. cut short by the next one).
  const echo = s.pendingEcho.indexOf(text);
  if (echo >= 0) return { ...s, interimTranscript: "", pendingEcho: s.pendingEcho.slice(echo + 1) };
  const history = text ? [...s.history, { role: "user" as const, text }] : s.history;
  return { ...s, transcript: text, interimTranscript: "", history };
}

function onReply(s: AgentState, a: Extract<AgentAction, { kind: "reply" }>): AgentState {
  if (!a.final) return s.aiResponse === a.text ? s : { ...s, aiResponse: a.text };
  const heard = a.interrupted ? (a.spokenText ?? a.text) : a.text;
  const entry: HistoryEntry = a.interrupted
    ? { role: "agent", text: heard, interrupted: true, fullText: a.text }
    : { role: "agent", text: heard };
  return {
    ...s,
    aiResponse: heard,
    history: heard || a.interrupted ? [...s.history, entry] : s.history,
  };
}

/** `name(arguments) → result`, arguments left out when there are none. */
export function toolLine(t: ToolCallInfo): string {
  const args = t.arguments.trim();
  const shown = args === "" || args === "{}" ? "" : args;
  return `${t.name}(${shown}) → ${t.result}`;
}

export function agentReducer(s: AgentState, a: AgentAction): AgentState {
  switch (a.kind) {
    case "connecting": // a new connection: no echo of the old one's typed text will come
      return { ...s, connectionStatus: "connecting", pendingEcho: [] };
    case "connected":
      return s.connectionStatus === "connected" ? s : { ...s, connectionStatus: "connected" };
    case "disconnected":
      return {
        ...s,
        connectionStatus: "disconnected",
        processingStatus: "idle",
        interimTranscript: "",
        pendingEcho: [],
      };
    case "failed":
      return {
        ...s,
        connectionStatus: "failed",
        processingStatus: "error",
        error: a.error ?? s.error,
        pendingEcho: [],
      };
    case "session":
      return { ...s, sessionId: a.sessionId, version: a.version ?? s.version };
    case "transcript":
      return onTranscript(s, a);
    case "reply":
      return onReply(s, a);
    case "status": {
      const next = { ...s };
      if (a.processing && (PROCESSING_STATUSES as string[]).includes(a.processing)) {
        next.processingStatus = a.processing as ProcessingStatus;
      }
      // The server may report "connected"; a local failure is not overridden by it.
      if (
        a.connection &&
        (CONNECTION_STATUSES as string[]).includes(a.connection) &&
        s.connectionStatus !== "failed" &&
        s.connectionStatus !== "disconnected"
      ) {
        next.connectionStatus = a.connection as ConnectionStatus;
      }
      return next.processingStatus === s.processingStatus &&
        next.connectionStatus === s.connectionStatus
        ? s
        : next;
    }
    case "metrics":
      return { ...s, metrics: a.metrics };
    case "tool": // a line in the conversation, before the reply that used it
      return { ...s, history: [...s.history, { role: "tool", text: toolLine(a.tool), tool: a.tool }] };
    case "error":
      return { ...s, error: a.error };
    case "clearError":
      return { ...s, error: null };
    case "restored":
      // A page that reloaded shows the conversation it carries on. One that only reconnected
      // already shows it, tool calls included (the server keeps none): that stays.
      return s.history.length === 0 && a.history.length > 0 ? { ...s, history: a.history } : s;
    case "userText": {
      // Typed text shows up at once; the server's echo of it (a final transcript) is expected.
      const text = a.text.trim();
      return {
        ...s,
        transcript: text,
        interimTranscript: "",
        pendingEcho: [...s.pendingEcho, text],
        history: [...s.history, { role: "user", text }],
      };
    }
  }
}
