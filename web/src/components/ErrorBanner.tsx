// Error banner with a retry action and a dismiss button. A busy refusal (the server is at its
// capacity) says so in words and when a retry is worth it, rather than showing a bare code.
import type { AgentError } from "../types";
import { isBusy } from "../hooks/busy";
import { AlertIcon, CloseIcon, RetryIcon } from "./Icons";

interface Props {
  error: AgentError;
  onRetry: () => void;
  onDismiss: () => void;
}

export function ErrorBanner({ error, onRetry, onDismiss }: Props) {
  const busy = isBusy(error);
  const wait = error.retryAfterS !== undefined ? Math.max(1, Math.round(error.retryAfterS)) : null;
  return (
    <div
      className={`error-banner${busy ? " is-busy" : ""}`}
      role="alert"
      data-testid="error-banner"
      data-code={error.code}
    >
      <AlertIcon size={20} className="error-icon" />
      <div className="error-text">
        {busy ? (
          <>
            <strong data-testid="busy-title">The server is busy</strong>
            <span>{error.message}</span>
            <span data-testid="busy-hint">
              {wait !== null ? `Try again in about ${wait} s.` : "Try again in a moment."}
            </span>
          </>
        ) : (
          <strong>{error.message}</strong>
        )}
        <span className="error-code">{error.code}</span>
      </div>
      <button type="button" className="btn btn-small" onClick={onRetry}>
        <RetryIcon size={16} /> Retry
      </button>
      <button type="button" className="btn-icon" onClick={onDismiss} aria-label="Dismiss error">
        <CloseIcon size={16} />
      </button>
    </div>
  );
}
