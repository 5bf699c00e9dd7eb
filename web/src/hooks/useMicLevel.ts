// Live microphone level (0..1) from an AudioWorklet that posts RMS values.
import { useEffect, useState } from "react";

/** Map RMS to a 0..1 meter value on a dB scale (-60 dB .. 0 dB). */
export function rmsToLevel(rms: number): number {
  if (!(rms > 0)) return 0;
  const db = 20 * Math.log10(rms);
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

export function useMicLevel(stream: MediaStream | null): number {
  const [level, setLevel] = useState(0);

  useEffect(() => {
    const Ctx = typeof window !== "undefined" ? window.AudioContext : undefined;
    if (!stream || !Ctx || stream.getAudioTracks().length === 0) {
      setLevel(0);
      return;
    }
    let closed = false;
    const ctx = new Ctx();
    const url = new URL("mic-level-worklet.js", document.baseURI).toString();
    ctx.audioWorklet
      .addModule(url)
      .then(() => {
        if (closed) return;
        const source = ctx.createMediaStreamSource(stream);
        const node = new AudioWorkletNode(ctx, "mic-level", { numberOfOutputs: 0 });
        node.port.onmessage = (e: MessageEvent<{ rms: number }>) => {
          // Smooth the fall so the bar does not flicker.
          const next = rmsToLevel(e.data.rms);
          setLevel((prev) => (next >= prev ? next : prev * 0.7 + next * 0.3));
        };
        source.connect(node);
        void ctx.resume();
      })
      .catch(() => setLevel(0));
    return () => {
      closed = true;
      void ctx.close().catch(() => undefined);
      setLevel(0);
    };
  }, [stream]);

  return level;
}
