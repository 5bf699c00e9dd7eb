// Resumable conversations (docs/protocol.md, "Resuming a conversation"). Every session's
// `connection_established` carries a secret `resume_token`; the page keeps the token of its
// conversation in sessionStorage (this tab only, gone with it) and, when it connects again
// (an unexpected drop, a worker that died, a reload), sends `{type: "resume", token}` first.
// The server answers `resumed` with the conversation and the token that resumes it from then
// on, or a non-fatal `resume_failed` (the new session is a new conversation). A session's own
// token is kept once it has a finished turn (the server saves nothing before): a drop before
// anything was said resumes nothing, and is not told it failed. Ending the conversation on
// purpose (disconnect) forgets the token.
import type { HistoryEntry } from "../types";

export const RESUME_TOKEN_KEY = "voice-agent.resume-token";

export type TokenStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

/** The tab's sessionStorage, or null where the browser refuses it (privacy modes, sandboxes). */
export function defaultTokenStorage(): TokenStorage | null {
  try {
    return typeof window !== "undefined" ? window.sessionStorage : null;
  } catch {
    return null;
  }
}

/** Which token the page holds, and which one it sends when a session starts. */
export class ResumeTokens {
  /** The token the current session's server gave (the conversation it will save). */
  private offered: string | null = null;

  constructor(private readonly storage: TokenStorage | null) {}

  held(): string | null {
    try {
      return this.storage?.getItem(RESUME_TOKEN_KEY) || null;
    } catch {
      return null;
    }
  }

  private keep(token: string): void {
    try {
      this.storage?.setItem(RESUME_TOKEN_KEY, token);
    } catch {
      /* storage full or refused: resuming is then unavailable, nothing else changes */
    }
  }

  /** A session started with this `resume_token` (absent: a server without resume). Returns
   * the token to send in `resume`, or null. The held token stays until the server answered,
   * so a drop before the answer resumes with it again. */
  established(token: unknown): string | null {
    if (typeof token !== "string" || token === "") {
      this.offered = null;
      return null;
    }
    this.offered = token;
    const held = this.held();
    return held && held !== token ? held : null;
  }

  /** A turn of this session finished (a final `ai_response`): the server saved the
   * conversation under the session's token, which resumes it from now on. */
  turnFinished(): void {
    if (this.offered && this.held() !== this.offered) this.keep(this.offered);
  }

  /** `resumed`: the conversation goes on under this token (the server's new one). */
  resumed(token: unknown): void {
    const next = typeof token === "string" && token ? token : this.offered;
    if (next) this.keep(next);
  }

  /** `resume_failed`: the held token resumes nothing; this session is a new conversation,
   * whose token is kept once it has a turn. */
  failed(): void {
    try {
      this.storage?.removeItem(RESUME_TOKEN_KEY);
    } catch {
      /* nothing kept */
    }
  }

  /** The user ended the conversation: the next one starts fresh. */
  forget(): void {
    this.offered = null;
    try {
      this.storage?.removeItem(RESUME_TOKEN_KEY);
    } catch {
      /* nothing kept */
    }
  }
}

/** The conversation a `resumed` message carries, as the page shows it; malformed entries are
 * left out. */
export function historyFromResumed(raw: unknown): HistoryEntry[] {
  if (!Array.isArray(raw)) return [];
  const out: HistoryEntry[] = [];
  for (const item of raw) {
    if (!item || typeof item !== "object") continue;
    const { role, text, interrupted, full_text: fullText } = item as Record<string, unknown>;
    if (typeof text !== "string" || (role !== "user" && role !== "assistant")) continue;
    if (role === "user") {
      out.push({ role: "user", text });
    } else if (interrupted === true) {
      out.push({ role: "agent", text, interrupted: true, fullText: typeof fullText === "string" ? fullText : text });
    } else {
      out.push({ role: "agent", text });
    }
  }
  return out;
}
