// The server's capacity refusal (docs/protocol.md, "Capacity and load"): a fatal `busy` error
// (older servers: `server_busy`, which newer ones still send while their models load) and then
// close 1013. The page shows it as "busy" with a Retry button instead of reconnecting on its own:
// retrying a full server at once is refused again.
import type { AgentError } from "../types";

export const BUSY_CODES: readonly string[] = ["busy", "server_busy"];
/** "Try again later": the close that follows a busy refusal. */
export const CLOSE_TRY_AGAIN = 1013;

export function isBusy(error: AgentError | null | undefined): boolean {
  return !!error && BUSY_CODES.includes(error.code);
}

/** The AgentError for a fatal `error` message, with the server's retry hint when it sent one. */
export function fatalError(msg: Record<string, unknown>): AgentError {
  const error: AgentError = {
    code: String(msg.code ?? "error"),
    message: String(msg.message ?? "Unknown error"),
  };
  const retry = msg.retry_after_s;
  if (typeof retry === "number" && Number.isFinite(retry) && retry >= 0) error.retryAfterS = retry;
  return error;
}

/** A close 1013 that came without its error message (a proxy may drop it): still busy. */
export function busyFromClose(reason: string): AgentError {
  return { code: "busy", message: reason && reason !== "busy" ? reason : "The server is busy" };
}
