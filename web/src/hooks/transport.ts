// One connection attempt's resources (signaling socket, peer connection, data channels, timers).
import type { ClientMessage } from "../types";
import { SeqFilter } from "./seqFilter";

export interface Conn {
  ws: WebSocket | null;
  pc: RTCPeerConnection | null;
  channels: RTCDataChannel[];
  offerSent: boolean;
  answerApplied: boolean;
  /** Local candidates gathered before the offer went out (trickle mode). */
  pendingLocal: (RTCIceCandidateInit | null)[];
  /** Remote candidates that arrived before the answer. */
  pendingRemote: RTCIceCandidateInit[];
  timers: Set<ReturnType<typeof setTimeout>>;
  ping: ReturnType<typeof setInterval> | null;
  /** Server messages already used, by `seq`: this connection's session numbers them from 1. */
  seqs: SeqFilter;
}

export const newConn = (): Conn => ({
  ws: null,
  pc: null,
  channels: [],
  offerSent: false,
  answerApplied: false,
  pendingLocal: [],
  pendingRemote: [],
  timers: new Set(),
  ping: null,
  seqs: new SeqFilter(),
});

/** Send on the WebSocket, or on an open data channel when the socket is gone. */
export function sendOn(c: Conn, msg: ClientMessage): boolean {
  const data = JSON.stringify(msg);
  if (c.ws && c.ws.readyState === 1) {
    c.ws.send(data);
    return true;
  }
  const dc = c.channels.find((ch) => ch.readyState === "open");
  if (dc) {
    dc.send(data);
    return true;
  }
  return false;
}

/** Close everything in c and clear its timers; handlers are detached first so nothing fires. */
export function closeConn(c: Conn): void {
  c.timers.forEach(clearTimeout);
  c.timers.clear();
  if (c.ping) clearInterval(c.ping);
  c.ping = null;
  for (const dc of c.channels) {
    dc.onmessage = null;
    try {
      dc.close();
    } catch {
      /* already closed */
    }
  }
  if (c.pc) {
    c.pc.onicecandidate = null;
    c.pc.ontrack = null;
    c.pc.onconnectionstatechange = null;
    c.pc.ondatachannel = null;
    c.pc.close();
  }
  if (c.ws) {
    c.ws.onopen = c.ws.onmessage = c.ws.onclose = c.ws.onerror = null;
    if (c.ws.readyState === 0 || c.ws.readyState === 1) c.ws.close(1000, "client closed");
  }
}
