// Horizontal level bar for the microphone (0..1).
interface Props {
  level: number;
  active: boolean;
  muted: boolean;
}

export function MicLevelMeter({ level, active, muted }: Props) {
  const pct = Math.round((active && !muted ? level : 0) * 100);
  const label = !active ? "Microphone off" : muted ? "Microphone muted" : "Microphone level";
  return (
    <div className="meter-wrap">
      <span className="meter-label">{label}</span>
      <div
        className={`meter ${active && !muted ? "" : "meter-off"}`}
        role="meter"
        aria-label="Microphone level"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={pct}
        data-testid="mic-level"
        data-level={pct}
      >
        <div className="meter-fill" style={{ clipPath: `inset(0 ${100 - pct}% 0 0)` }} />
      </div>
    </div>
  );
}
