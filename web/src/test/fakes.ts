// Minimal in-test fakes of the browser APIs the hook uses (jsdom has no WebRTC).
import { vi } from "vitest";
import type { VoiceAgentOptions } from "../hooks/useVoiceAgentWebRTC";

export class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  static last(): FakeWebSocket {
    const ws = FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    if (!ws) throw new Error("no WebSocket was created");
    return ws;
  }
  readyState = 0;
  sent: string[] = [];
  closedWith: number | null = null;
  onopen: ((e: Event) => void) | null = null;
  onmessage: ((e: MessageEvent) => void) | null = null;
  onclose: ((e: CloseEvent) => void) | null = null;
  onerror: ((e: Event) => void) | null = null;
  constructor(public url: string) {
    FakeWebSocket.instances.push(this);
  }
  send(data: string): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(data);
  }
  close(code = 1000): void {
    this.closedWith = code;
    this.readyState = 3;
  }
  /** Messages the client sent, parsed. */
  messages(): Array<Record<string, unknown>> {
    return this.sent.map((s) => JSON.parse(s) as Record<string, unknown>);
  }
  // ---- test drivers ----
  serverOpen(): void {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }
  serverSend(msg: unknown): void {
    this.onmessage?.(new MessageEvent("message", { data: JSON.stringify(msg) }));
  }
  serverClose(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: false } as CloseEvent);
  }
}

export class FakeDataChannel {
  readyState: RTCDataChannelState = "connecting";
  onmessage: ((e: MessageEvent) => void) | null = null;
  sent: string[] = [];
  closed = false;
  constructor(public label: string) {}
  send(data: string): void {
    this.sent.push(data);
  }
  close(): void {
    this.closed = true;
    this.readyState = "closed";
  }
  serverSend(msg: unknown): void {
    this.onmessage?.(new MessageEvent("message", { data: JSON.stringify(msg) }));
  }
}

export class FakeTrack {
  kind = "audio";
  enabled = true;
  stopped = false;
  stop = vi.fn(() => {
    this.stopped = true;
  });
}

export class FakeStream {
  tracks: FakeTrack[] = [new FakeTrack()];
  getTracks(): FakeTrack[] {
    return this.tracks;
  }
  getAudioTracks(): FakeTrack[] {
    return this.tracks;
  }
}

export class FakePeerConnection extends EventTarget {
  static instances: FakePeerConnection[] = [];
  static last(): FakePeerConnection {
    const pc = FakePeerConnection.instances[FakePeerConnection.instances.length - 1];
    if (!pc) throw new Error("no RTCPeerConnection was created");
    return pc;
  }
  iceGatheringState: RTCIceGatheringState = "new";
  connectionState: RTCPeerConnectionState = "new";
  localDescription: RTCSessionDescriptionInit | null = null;
  remoteDescription: RTCSessionDescriptionInit | null = null;
  channels: FakeDataChannel[] = [];
  tracks: FakeTrack[] = [];
  remoteCandidates: RTCIceCandidateInit[] = [];
  closed = false;
  onicecandidate: ((e: { candidate: { toJSON(): RTCIceCandidateInit } | null }) => void) | null = null;
  ontrack: ((e: unknown) => void) | null = null;
  onconnectionstatechange: (() => void) | null = null;
  ondatachannel: ((e: unknown) => void) | null = null;
  constructor(public config?: RTCConfiguration) {
    super();
    FakePeerConnection.instances.push(this);
  }
  addTrack(track: FakeTrack): object {
    this.tracks.push(track);
    return {};
  }
  getSenders(): Array<{ track: FakeTrack | undefined; replaceTrack: (t: FakeTrack) => Promise<void> }> {
    return this.tracks.map((t, i) => ({
      track: t,
      replaceTrack: async (n: FakeTrack) => {
        this.tracks[i] = n;
      },
    }));
  }
  createDataChannel(label: string): FakeDataChannel {
    const dc = new FakeDataChannel(label);
    this.channels.push(dc);
    return dc;
  }
  async createOffer(): Promise<RTCSessionDescriptionInit> {
    return { type: "offer", sdp: "v=0 fake-offer" };
  }
  async setLocalDescription(d: RTCSessionDescriptionInit): Promise<void> {
    this.localDescription = d;
    this.iceGatheringState = "gathering";
  }
  async setRemoteDescription(d: RTCSessionDescriptionInit): Promise<void> {
    this.remoteDescription = d;
  }
  async addIceCandidate(c: RTCIceCandidateInit): Promise<void> {
    this.remoteCandidates.push(c);
  }
  close(): void {
    this.closed = true;
    this.connectionState = "closed";
  }
  // ---- test drivers ----
  emitCandidate(init: RTCIceCandidateInit | null): void {
    this.onicecandidate?.({ candidate: init ? { toJSON: () => init } : null });
  }
  finishGathering(): void {
    this.iceGatheringState = "complete";
    if (this.localDescription) this.localDescription = { ...this.localDescription, sdp: "v=0 fake-offer+candidates" };
    this.dispatchEvent(new Event("icegatheringstatechange"));
    this.emitCandidate(null);
  }
  setConnectionState(s: RTCPeerConnectionState): void {
    this.connectionState = s;
    this.onconnectionstatechange?.();
  }
}

export interface FakeEnv {
  options: VoiceAgentOptions;
  streams: FakeStream[];
  getUserMedia: ReturnType<typeof vi.fn>;
}

/** Options wiring the hook to the fakes; getUserMedia records its constraints. */
export function fakeEnv(extra: Partial<VoiceAgentOptions> = {}): FakeEnv {
  FakeWebSocket.instances = [];
  FakePeerConnection.instances = [];
  const streams: FakeStream[] = [];
  const getUserMedia = vi.fn(async () => {
    const s = new FakeStream();
    streams.push(s);
    return s as unknown as MediaStream;
  });
  return {
    streams,
    getUserMedia,
    options: {
      url: "ws://test.local/ws/v3",
      pingIntervalMs: 0,
      WebSocketImpl: FakeWebSocket as unknown as VoiceAgentOptions["WebSocketImpl"],
      RTCPeerConnectionImpl: FakePeerConnection as unknown as VoiceAgentOptions["RTCPeerConnectionImpl"],
      getUserMedia: getUserMedia as unknown as VoiceAgentOptions["getUserMedia"],
      ...extra,
    },
  };
}
