// Voice agent dashboard: start/stop, statuses, mic level, conversation, latency, typed input.
import { useVoiceAgentWebRTC, type VoiceAgentOptions } from "../hooks/useVoiceAgentWebRTC";
import { useMicLevel } from "../hooks/useMicLevel";
import { StatusIndicators } from "../components/StatusIndicators";
import { MicLevelMeter } from "../components/MicLevelMeter";
import { Conversation } from "../components/Conversation";
import { LatencyPanel } from "../components/LatencyPanel";
import { ErrorBanner } from "../components/ErrorBanner";
import { TextComposer } from "../components/TextComposer";
import { MicControls } from "../components/MicControls";
import { HandIcon, MicIcon, StopIcon } from "../components/Icons";

export function V3Dashboard({ agentOptions }: { agentOptions?: VoiceAgentOptions }) {
  const agent = useVoiceAgentWebRTC(agentOptions);
  const level = useMicLevel(agent.localStream);
  const active = agent.connectionStatus === "connected" || agent.connectionStatus === "connecting";
  const canInterrupt =
    agent.connectionStatus === "connected" &&
    (agent.processingStatus === "speaking" || agent.processingStatus === "processing");

  const toggle = () => (active ? agent.disconnect() : agent.connect());

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true">
            <MicIcon size={18} />
          </span>
          <h1>Voice Agent</h1>
        </div>
        <div className="session">
          <span className="muted">Session</span>{" "}
          <code data-testid="session-id" className={agent.sessionId ? "" : "none"} title={agent.sessionId ?? undefined}>
            {agent.sessionId ?? "none"}
          </code>
          {agent.version && <span className="muted version">v{agent.version}</span>}
        </div>
      </header>

      {agent.error && (
        <ErrorBanner error={agent.error} onRetry={() => agent.connect()} onDismiss={agent.clearError} />
      )}

      <main className="layout">
        <div className="col col-side">
          <section className="card control" aria-label="Conversation controls">
            <button
              type="button"
              className={`start-button ${active ? "is-active" : ""}`}
              data-testid="start-button"
              aria-pressed={active}
              onClick={toggle}
            >
              {active ? <StopIcon size={22} /> : <MicIcon size={22} />}
              <span>{active ? "End conversation" : "Start conversation"}</span>
            </button>
            <StatusIndicators
              connection={agent.connectionStatus}
              processing={agent.processingStatus}
              reconnectAttempt={agent.reconnectAttempt}
            />
            <MicLevelMeter level={level} active={agent.localStream !== null} muted={agent.muted} />
            <MicControls
              selectedId={agent.microphoneId}
              onSelect={(id) => void agent.selectMicrophone(id).catch(() => undefined)}
              muted={agent.muted}
              onMute={agent.setMuted}
              refreshKey={agent.localStream}
            />
            <button
              type="button"
              className="btn btn-ghost interrupt"
              onClick={agent.interrupt}
              disabled={!canInterrupt}
            >
              <HandIcon size={16} /> Interrupt reply
            </button>
          </section>
          <LatencyPanel metrics={agent.metrics} />
        </div>
        <div className="col col-main">
          <Conversation
            history={agent.history}
            transcript={agent.transcript}
            interimTranscript={agent.interimTranscript}
            aiResponse={agent.aiResponse}
            processing={agent.processingStatus}
          />
          <TextComposer disabled={agent.connectionStatus !== "connected"} onSend={agent.sendText} />
        </div>
      </main>
    </div>
  );
}
