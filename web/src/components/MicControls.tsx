// Microphone picker (enumerateDevices) and mute toggle.
import { useEffect, useState } from "react";
import { MicIcon, MicOffIcon } from "./Icons";

interface Props {
  selectedId: string | undefined;
  onSelect: (deviceId: string) => void;
  muted: boolean;
  onMute: (muted: boolean) => void;
  /** Re-read the device list when this changes (labels appear after permission). */
  refreshKey: unknown;
}

export function MicControls({ selectedId, onSelect, muted, onMute, refreshKey }: Props) {
  const [devices, setDevices] = useState<MediaDeviceInfo[]>([]);

  useEffect(() => {
    const md = typeof navigator !== "undefined" ? navigator.mediaDevices : undefined;
    if (!md?.enumerateDevices) return;
    let live = true;
    const load = () =>
      md
        .enumerateDevices()
        .then((all) => live && setDevices(all.filter((d) => d.kind === "audioinput")))
        .catch(() => undefined);
    void load();
    md.addEventListener?.("devicechange", load);
    return () => {
      live = false;
      md.removeEventListener?.("devicechange", load);
    };
  }, [refreshKey]);

  return (
    <div className="mic-controls">
      <label className="field">
        <span>Microphone</span>
        <select
          data-testid="mic-select"
          value={selectedId ?? ""}
          onChange={(e) => onSelect(e.target.value)}
          disabled={devices.length === 0}
        >
          <option value="">Default microphone</option>
          {devices
            .filter((d) => d.deviceId && d.deviceId !== "default")
            .map((d, i) => (
              <option key={d.deviceId} value={d.deviceId}>
                {d.label || `Microphone ${i + 1}`}
              </option>
            ))}
        </select>
      </label>
      <button
        type="button"
        className={`btn btn-toggle ${muted ? "is-on" : ""}`}
        aria-pressed={muted}
        data-testid="mute-button"
        onClick={() => onMute(!muted)}
      >
        {muted ? <MicOffIcon size={16} /> : <MicIcon size={16} />}
        {muted ? "Unmute" : "Mute"}
      </button>
    </div>
  );
}
