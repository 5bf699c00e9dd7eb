// Connection and processing status pills with icons and readable labels.
import type { ConnectionStatus, ProcessingStatus } from "../types";
import {
  AlertIcon,
  IdleIcon,
  LinkIcon,
  SpeakerIcon,
  SpinnerIcon,
  ThinkIcon,
  UnlinkIcon,
  WaveIcon,
} from "./Icons";

const CONNECTION_LABEL: Record<ConnectionStatus, string> = {
  disconnected: "Disconnected",
  connecting: "Connecting",
  connected: "Connected",
  failed: "Connection failed",
};

const PROCESSING_LABEL: Record<ProcessingStatus, string> = {
  idle: "Idle",
  listening: "Listening",
  processing: "Thinking",
  speaking: "Speaking",
  error: "Error",
};

function connectionIcon(s: ConnectionStatus) {
  if (s === "connected") return <LinkIcon size={16} />;
  if (s === "connecting") return <SpinnerIcon size={16} />;
  if (s === "failed") return <AlertIcon size={16} />;
  return <UnlinkIcon size={16} />;
}

function processingIcon(s: ProcessingStatus) {
  if (s === "listening") return <WaveIcon size={16} />;
  if (s === "processing") return <ThinkIcon size={16} />;
  if (s === "speaking") return <SpeakerIcon size={16} />;
  if (s === "error") return <AlertIcon size={16} />;
  return <IdleIcon size={16} />;
}

interface Props {
  connection: ConnectionStatus;
  processing: ProcessingStatus;
  reconnectAttempt: number;
}

export function StatusIndicators({ connection, processing, reconnectAttempt }: Props) {
  const connLabel =
    connection === "connecting" && reconnectAttempt > 0
      ? `Reconnecting (attempt ${reconnectAttempt})`
      : CONNECTION_LABEL[connection];
  return (
    <div className="status-row" role="group" aria-label="Status">
      <span
        className={`pill pill-conn-${connection}`}
        data-testid="connection-status"
        data-status={connection}
        role="status"
      >
        {connectionIcon(connection)}
        <span className="pill-caption">Connection</span>
        <span className="pill-value">{connLabel}</span>
      </span>
      <span
        className={`pill pill-proc-${processing}`}
        data-testid="processing-status"
        data-status={processing}
        role="status"
      >
        {processingIcon(processing)}
        <span className="pill-caption">Agent</span>
        <span className="pill-value">{PROCESSING_LABEL[processing]}</span>
      </span>
    </div>
  );
}
