// Conversation: history, the live user transcript (final + interim) and the streaming reply.
import { useEffect, useRef } from "react";
import type { HistoryEntry, ProcessingStatus } from "../types";

interface Props {
  history: HistoryEntry[];
  transcript: string;
  interimTranscript: string;
  aiResponse: string;
  processing: ProcessingStatus;
}

export function Conversation({ history, transcript, interimTranscript, aiResponse, processing }: Props) {
  const listRef = useRef<HTMLOListElement>(null);
  // Keep the newest message in view.
  useEffect(() => {
    const el = listRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [history.length, interimTranscript, aiResponse]);

  const last = history[history.length - 1];
  // The reply is still streaming while it is not yet the last history entry.
  const streaming = aiResponse !== "" && !(last?.role === "agent" && last.text === aiResponse);

  return (
    <section className="card conversation" aria-labelledby="conv-title">
      <div className="card-head">
        <h2 id="conv-title">Conversation</h2>
      </div>
      <ol ref={listRef} className="history" data-testid="history" aria-label="Conversation history">
        {history.length === 0 && !interimTranscript && !streaming && (
          <li className="muted empty">Press Start and say something, or type a message below.</li>
        )}
        {history.map((h, i) => (
          <li key={i} className={`bubble bubble-${h.role}`} data-role={h.role}>
            <span className="who">{h.role === "user" ? "You" : h.role === "tool" ? "Tool" : "Agent"}</span>
            <span className="text">{h.text}</span>
            {h.interrupted && <span className="tag">interrupted</span>}
            {h.tool && !h.tool.ok && <span className="tag">failed</span>}
            {h.tool && h.tool.latencyMs !== null && (
              <span className="tag">{Math.round(h.tool.latencyMs)} ms</span>
            )}
          </li>
        ))}
        {interimTranscript && (
          <li className="bubble bubble-user bubble-live" aria-hidden="true">
            <span className="who">You</span>
            <span className="text interim">{interimTranscript}</span>
          </li>
        )}
        {streaming && (
          <li className="bubble bubble-agent bubble-live" aria-hidden="true">
            <span className="who">Agent</span>
            <span className="text">
              {aiResponse}
              {processing === "speaking" || processing === "processing" ? <span className="caret" /> : null}
            </span>
          </li>
        )}
      </ol>
      <div className="live-grid">
        <div className="live">
          <span className="live-label">You said</span>
          <p aria-live="polite" className="live-text">
            <span data-testid="transcript-final">{transcript}</span>{" "}
            <span data-testid="transcript-interim" className="interim">
              {interimTranscript}
            </span>
          </p>
        </div>
        <div className="live">
          <span className="live-label">Agent reply</span>
          <p aria-live="polite" className="live-text" data-testid="ai-response">
            {aiResponse}
          </p>
        </div>
      </div>
    </section>
  );
}
