// Per-turn latency: the headline "heard -> first audio" figure and a stage breakdown.
import type { TurnMetrics } from "../types";
import { ClockIcon } from "./Icons";

const HEADLINE_KEYS = ["end_of_speech_to_first_audio_ms", "voice_to_voice_ms"] as const;

const LABELS: Record<string, string> = {
  end_of_speech_to_first_audio_ms: "End of speech to first audio",
  voice_to_voice_ms: "Voice to voice",
  stt_ms: "Speech to text",
  llm_first_token_ms: "LLM first token",
  tts_first_audio_ms: "TTS first audio",
  first_audio_sent_ms: "First audio sent",
  end_of_turn_delay_ms: "End-of-turn wait",
  first_sentence_ms: "First sentence",
  transport_ms: "Transport",
};

// Totals and inputs, not stages of the reply.
const HIDDEN = new Set(["reply_total_ms", "user_speech_ms"]);

function label(key: string): string {
  if (LABELS[key]) return LABELS[key];
  const words = key.replace(/_ms$/, "").replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);

export function LatencyPanel({ metrics }: { metrics: TurnMetrics | null }) {
  const headlineKey = HEADLINE_KEYS.find((k) => typeof metrics?.[k] === "number");
  const headline = headlineKey ? (metrics?.[headlineKey] as number) : null;
  const stages = Object.entries(metrics ?? {}).filter(
    (e): e is [string, number] =>
      e[0].endsWith("_ms") &&
      !e[0].startsWith("at_") && // the timeline offsets repeat the stages; keep the card short
      !HIDDEN.has(e[0]) &&
      e[0] !== headlineKey &&
      typeof e[1] === "number" &&
      Number.isFinite(e[1]),
  );
  const max = Math.max(1, headline ?? 0, ...stages.map(([, v]) => v));
  const tone = headline === null ? "" : headline < 800 ? "good" : headline < 1500 ? "ok" : "slow";

  return (
    <section className="card latency" aria-labelledby="latency-title" data-testid="latency">
      <div className="card-head">
        <h2 id="latency-title">
          <ClockIcon size={18} /> Latency
        </h2>
        {typeof metrics?.turn === "number" && <span className="muted">Turn {metrics.turn}</span>}
      </div>
      {metrics === null ? (
        <p className="muted empty">Timings appear after the first reply.</p>
      ) : (
        <>
          <div className={`latency-headline ${tone}`}>
            <span className="latency-value" data-testid="latency-value">
              {headline === null ? "n/a" : fmt(headline)}
            </span>
            <span className="latency-caption">
              {headlineKey === "voice_to_voice_ms" ? "voice to voice" : "end of speech to first audio"}
            </span>
          </div>
          {stages.length > 0 && (
            <dl className="stages">
              {stages.map(([k, v]) => (
                <div className="stage" key={k}>
                  <dt>{label(k)}</dt>
                  <dd>
                    <span className="stage-bar" aria-hidden="true">
                      <span style={{ transform: `scaleX(${v / max})` }} />
                    </span>
                    <span className="stage-value">{fmt(v)}</span>
                  </dd>
                </div>
              ))}
            </dl>
          )}
        </>
      )}
    </section>
  );
}
