// Small helpers for the signaling/WebRTC plumbing, kept free of React.

export type WebSocketCtor = new (url: string) => WebSocket;
export type PeerConnectionCtor = new (config?: RTCConfiguration) => RTCPeerConnection;
export type GetUserMedia = (constraints: MediaStreamConstraints) => Promise<MediaStream>;

export interface ReconnectOptions {
  /** Attempts after a drop before giving up (default 5). */
  maxAttempts?: number;
  /** First retry delay; doubles each attempt (default 1000 ms). */
  baseDelayMs?: number;
  /** Upper bound of a single delay (default 15000 ms). */
  maxDelayMs?: number;
}

/** Signaling URL: ws(s)://<host>/ws/v3, with ?token=... from the option or the page URL. */
export function buildSignalingUrl(
  explicitUrl: string | undefined,
  token: string | undefined,
  loc: Pick<Location, "protocol" | "host" | "search"> = window.location,
): string {
  const proto = loc.protocol === "https:" ? "wss:" : "ws:";
  const url = new URL(explicitUrl ?? `${proto}//${loc.host}/ws/v3`);
  const tok = token ?? new URLSearchParams(loc.search).get("token") ?? undefined;
  if (tok) url.searchParams.set("token", tok);
  return url.toString();
}

export function backoffDelay(attempt: number, opts: ReconnectOptions): number {
  const base = opts.baseDelayMs ?? 1000;
  const max = opts.maxDelayMs ?? 15000;
  return Math.min(base * 2 ** Math.max(0, attempt - 1), max);
}

export function audioConstraints(deviceId: string | undefined): MediaStreamConstraints {
  return {
    audio: {
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
      ...(deviceId ? { deviceId: { exact: deviceId } } : {}),
    },
    video: false,
  };
}

export function defaultGetUserMedia(): GetUserMedia {
  return (c) => {
    if (!navigator.mediaDevices?.getUserMedia) {
      return Promise.reject(new Error("This browser cannot capture audio (needs HTTPS or localhost)."));
    }
    return navigator.mediaDevices.getUserMedia(c);
  };
}

/** Resolves when ICE gathering completes or after timeoutMs, whichever is first. */
export function waitForIceGathering(
  pc: RTCPeerConnection,
  timeoutMs: number,
  timers: Set<ReturnType<typeof setTimeout>>,
): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    timers.add(timer);
    function done(): void {
      clearTimeout(timer);
      timers.delete(timer);
      pc.removeEventListener?.("icegatheringstatechange", check);
      resolve();
    }
    function check(): void {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener?.("icegatheringstatechange", check);
  });
}

/** A close code that means "do not retry" (policy, auth or app-level refusal). */
export function isTerminalClose(code: number): boolean {
  return code === 1008 || (code >= 4000 && code < 5000);
}

export function errorMessage(err: unknown): string {
  if (err && typeof err === "object" && "message" in err && typeof err.message === "string") {
    return err.message || String((err as { name?: unknown }).name ?? "Error");
  }
  return String(err);
}

/** A readable explanation of a getUserMedia failure. */
export function microphoneErrorMessage(err: unknown): string {
  const name = err && typeof err === "object" && "name" in err ? String(err.name) : "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Microphone access was denied. Allow it in the browser, then retry.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found. Connect one or pick another, then retry.";
  }
  if (name === "NotReadableError") return "The microphone is in use by another application.";
  return `Microphone unavailable: ${errorMessage(err)}`;
}

/** Start playback; autoplay refusals are reported to the caller, not thrown. */
export function playAudio(el: HTMLAudioElement, stream: MediaStream): void {
  el.srcObject = stream;
  try {
    const p = el.play?.() as Promise<void> | undefined;
    p?.catch?.(() => undefined);
  } catch {
    /* jsdom: play() not implemented */
  }
}
