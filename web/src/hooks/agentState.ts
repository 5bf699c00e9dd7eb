// Pure state machine for the voice agent: server events and local actions -> UI state.
// Events may arrive twice (WebSocket and data channel mirror each other), so every
// transition here is idempotent or guarded by the `final` flags.
import {
  CONNECTION_STATUSES,
  PROCESSING_STATUSES,
  type AgentError,
  type ConnectionStatus,
  type HistoryEntry,
  type ProcessingStatus,
  type TurnMetrics,
} from "../types";

/** A repeated final with the same text inside this window is a mirrored duplicate. */
export const DUPLICATE_WINDOW_MS = 5000;
/** A late interim that is a prefix of a final this recent is a mirrored straggler. */
export const LATE_INTERIM_WINDOW_MS = 1500;

interface LastFinal {
  text: string;
  at: number;
}

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
  // Bookkeeping for de-duplication (not part of the public API).
  userTurnOpen: boolean;
  replyOpen: boolean;
  lastUserFinal: LastFinal | null;
  lastReplyFinal: LastFinal | null;
  lastError: (AgentError & { at: number }) | null;
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
  userTurnOpen: false,
  replyOpen: false,
  lastUserFinal: null,
  lastReplyFinal: null,
  lastError: null,
};

export type AgentAction =
  | { kind: "connecting" }
  | { kind: "connected" }
  | { kind: "disconnected" }
  | { kind: "failed"; error?: AgentError }
  | { kind: "session"; sessionId: string; version: string | null }
  | { kind: "transcript"; text: string; final: boolean; at: number }
  | {
      kind: "reply";
      text: string;
      final: boolean;
      interrupted: boolean;
      spokenText: string | null;
      at: number;
    }
  | { kind: "status"; connection?: string; processing?: string }
  | { kind: "metrics"; metrics: TurnMetrics }
  | { kind: "error"; error: AgentError; at: number }
  | { kind: "clearError" }
  | { kind: "userText"; text: string; at: number };

const recent = (last: LastFinal | null, text: string, at: number): boolean =>
  last !== null && last.text === text && at - last.at < DUPLICATE_WINDOW_MS;

const isPrefixOfRecent = (last: LastFinal | null, text: string, at: number): boolean =>
  last !== null && last.text.startsWith(text) && at - last.at < LATE_INTERIM_WINDOW_MS;

function onTranscript(s: AgentState, a: Extract<AgentAction, { kind: "transcript" }>): AgentState {
  const text = a.text.trim();
  if (!a.final) {
    // A late mirrored interim of an utterance we already finalised: drop it.
    if (!s.userTurnOpen && isPrefixOfRecent(s.lastUserFinal, text, a.at)) return s;
    if (s.userTurnOpen && s.interimTranscript === text) return s;
    return { ...s, interimTranscript: text, userTurnOpen: true };
  }
  if (!s.userTurnOpen && recent(s.lastUserFinal, text, a.at)) return s; // duplicate final
  const history = text ? [...s.history, { role: "user" as const, text }] : s.history;
  return {
    ...s,
    transcript: text,
    interimTranscript: "",
    userTurnOpen: false,
    lastUserFinal: { text, at: a.at },
    history,
  };
}

function onReply(s: AgentState, a: Extract<AgentAction, { kind: "reply" }>): AgentState {
  if (!a.final) {
    if (!s.replyOpen && isPrefixOfRecent(s.lastReplyFinal, a.text, a.at)) return s;
    if (s.replyOpen && s.aiResponse === a.text) return s;
    return { ...s, aiResponse: a.text, replyOpen: true };
  }
  const heard = a.interrupted ? (a.spokenText ?? a.text) : a.text;
  if (!s.replyOpen && recent(s.lastReplyFinal, heard, a.at)) return s; // duplicate final
  const entry: HistoryEntry = a.interrupted
    ? { role: "agent", text: heard, interrupted: true, fullText: a.text }
    : { role: "agent", text: heard };
  return {
    ...s,
    aiResponse: heard,
    replyOpen: false,
    lastReplyFinal: { text: heard, at: a.at },
    history: heard || a.interrupted ? [...s.history, entry] : s.history,
  };
}

export function agentReducer(s: AgentState, a: AgentAction): AgentState {
  switch (a.kind) {
    case "connecting":
      return { ...s, connectionStatus: "connecting" };
    case "connected":
      return s.connectionStatus === "connected" ? s : { ...s, connectionStatus: "connected" };
    case "disconnected":
      return {
        ...s,
        connectionStatus: "disconnected",
        processingStatus: "idle",
        interimTranscript: "",
        userTurnOpen: false,
        replyOpen: false,
      };
    case "failed":
      return {
        ...s,
        connectionStatus: "failed",
        processingStatus: "error",
        error: a.error ?? s.error,
        userTurnOpen: false,
        replyOpen: false,
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
    case "error": {
      const le = s.lastError;
      if (le && le.code === a.error.code && le.message === a.error.message && a.at - le.at < 1000) {
        return s; // mirrored duplicate
      }
      return { ...s, error: a.error, lastError: { ...a.error, at: a.at } };
    }
    case "clearError":
      return { ...s, error: null };
    case "userText": {
      // Typed text shows up at once; a server echo as a final transcript is then a duplicate.
      const text = a.text.trim();
      return {
        ...s,
        transcript: text,
        interimTranscript: "",
        userTurnOpen: false,
        lastUserFinal: { text, at: a.at },
        history: [...s.history, { role: "user", text }],
      };
    }
  }
}
