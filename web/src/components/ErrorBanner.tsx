// Error banner with a retry action and a dismiss button.
import type { AgentError } from "../types";
import { AlertIcon, CloseIcon, RetryIcon } from "./Icons";

interface Props {
  error: AgentError;
  onRetry: () => void;
  onDismiss: () => void;
}

export function ErrorBanner({ error, onRetry, onDismiss }: Props) {
  return (
    <div className="error-banner" role="alert" data-testid="error-banner" data-code={error.code}>
      <AlertIcon size={20} className="error-icon" />
      <div className="error-text">
        <strong>{error.message}</strong>
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
