// React hook: WebSocket signaling + WebRTC audio + data-channel events for the voice agent.
// Browser APIs are injectable (options) so tests can drive it with small fakes.
import { useCallback, useEffect, useReducer, useRef, useState } from "react";
import { agentReducer, initialAgentState } from "./agentState";
import { eventToAction } from "./serverEvents";
import { closeConn, newConn, sendOn, type Conn } from "./transport";
import {
  audioConstraints,
  backoffDelay,
  buildSignalingUrl,
  defaultGetUserMedia,
  errorMessage,
  isTerminalClose,
  microphoneErrorMessage,
  playAudio,
  waitForIceGathering,
  type GetUserMedia,
  type PeerConnectionCtor,
  type ReconnectOptions,
  type WebSocketCtor,
} from "./connectionUtils";
import { parseServerMessage, type AgentError, type ClientMessage } from "../types";
import { busyFromClose, CLOSE_TRY_AGAIN, fatalError } from "./busy";
import { defaultTokenStorage, historyFromResumed, ResumeTokens, type TokenStorage } from "./resume";

export interface VoiceAgentOptions {
  /** Full signaling URL; default ws(s)://<location.host>/ws/v3. */
  url?: string;
  /** Appended as ?token=...; default: the page's own ?token= parameter. */
  token?: string;
  deviceId?: string;
  iceServers?: RTCIceServer[];
  /** true: send the offer at once and trickle candidates; false (default): wait for gathering. */
  trickleIce?: boolean;
  iceGatheringTimeoutMs?: number;
  /** Keep-alive ping over the WebSocket; 0 disables (default 15000 ms). */
  pingIntervalMs?: number;
  reconnect?: ReconnectOptions | false;
  /** Where the conversation's resume token is kept (default: the tab's sessionStorage; null:
   * never resume). Read when the hook mounts. */
  resumeStorage?: TokenStorage | null;
  // Injectable browser APIs.
  WebSocketImpl?: WebSocketCtor;
  RTCPeerConnectionImpl?: PeerConnectionCtor;
  getUserMedia?: GetUserMedia;
  createAudioElement?: () => HTMLAudioElement;
}

export function useVoiceAgentWebRTC(hookOptions: VoiceAgentOptions = {}) {
  const [state, dispatch] = useReducer(agentReducer, initialAgentState);
  const [muted, setMutedState] = useState(false);
  const [microphoneId, setMicrophoneId] = useState<string | undefined>(hookOptions.deviceId);
  const [localStream, setLocalStream] = useState<MediaStream | null>(null);
  const [reconnectAttempt, setReconnectAttempt] = useState(0);

  const opts = useRef<VoiceAgentOptions>(hookOptions);
  const conn = useRef<Conn>(newConn());
  const gen = useRef(0); // bumps on every teardown; stale callbacks compare against it
  const stream = useRef<MediaStream | null>(null);
  const audioEl = useRef<HTMLAudioElement | null>(null);
  const mutedRef = useRef(false);
  const stopped = useRef(true); // true after a user disconnect, fatal error or unmount
  const attempts = useRef(0);
  const retryTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const microphoneIdRef = useRef(microphoneId);
  const tokens = useRef<ResumeTokens | null>(null);
  if (tokens.current === null) {
    const storage = hookOptions.resumeStorage;
    tokens.current = new ResumeTokens(storage === undefined ? defaultTokenStorage() : storage);
  }

  const send = useCallback((msg: ClientMessage): boolean => sendOn(conn.current, msg), []);

  /** Close ws/pc/channels and clear timers; the microphone stays unless releaseMedia runs. */
  const closeTransport = useCallback(() => {
    gen.current += 1;
    closeConn(conn.current);
    conn.current = newConn();
    if (audioEl.current) {
      audioEl.current.pause?.();
      audioEl.current.srcObject = null;
    }
  }, []);

  const releaseMedia = useCallback(() => {
    stream.current?.getTracks().forEach((t) => t.stop());
    stream.current = null;
    setLocalStream(null);
  }, []);

  const clearRetry = useCallback(() => {
    if (retryTimer.current) clearTimeout(retryTimer.current);
    retryTimer.current = null;
  }, []);

  /** Give up: tear everything down and show the failure. */
  const fail = useCallback(
    (error: AgentError) => {
      stopped.current = true;
      clearRetry();
      closeTransport();
      releaseMedia();
      setReconnectAttempt(0);
      dispatch({ kind: "failed", error });
    },
    [clearRetry, closeTransport, releaseMedia],
  );

  // `start` and `onDrop` reference each other; a ref breaks the cycle.
  const startRef = useRef<() => void>(() => undefined);

  const onDrop = useCallback(
    (reason: string, code?: number) => {
      if (stopped.current) return;
      closeTransport();
      const rc = opts.current.reconnect;
      if (code === CLOSE_TRY_AGAIN) {
        fail(busyFromClose(reason)); // full: reconnecting on our own would only be refused again
        return;
      }
      if (code !== undefined && isTerminalClose(code)) {
        fail({ code: "connection_refused", message: reason || `Server closed the connection (${code})` });
        return;
      }
      attempts.current += 1;
      const max = rc === false ? 0 : (rc?.maxAttempts ?? 5);
      if (attempts.current > max) {
        fail({ code: "connection_lost", message: `Connection lost: ${reason}` });
        return;
      }
      setReconnectAttempt(attempts.current);
      dispatch({ kind: "connecting" });
      const delay = backoffDelay(attempts.current, rc || {});
      retryTimer.current = setTimeout(() => {
        retryTimer.current = null;
        if (!stopped.current) startRef.current();
      }, delay);
    },
    [closeTransport, fail],
  );

  const handleMessage = useCallback(
    (raw: unknown) => {
      const msg = parseServerMessage(raw);
      if (!msg) return;
      const c = conn.current;
      if (!c.seqs.accept(msg.seq)) return; // a copy of one already used (the other channel)
      switch (msg.type) {
        case "connection_established": {
          attempts.current = 0;
          setReconnectAttempt(0);
          dispatch({ kind: "session", sessionId: String(msg.session_id ?? ""), version: msg.version ?? null });
          dispatch({ kind: "connected" });
          // The conversation this tab had (a drop, a worker gone, a reload) goes on here.
          const held = tokens.current?.established(msg.resume_token);
          if (held) send({ type: "resume", token: held });
          break;
        }
        case "resumed":
          tokens.current?.resumed(msg.resume_token);
          dispatch({ kind: "restored", history: historyFromResumed(msg.history) });
          break;
        case "answer": {
          const pc = c.pc;
          if (!pc || c.answerApplied || typeof msg.sdp !== "string") break;
          c.answerApplied = true;
          const g = gen.current;
          pc.setRemoteDescription({ type: "answer", sdp: msg.sdp })
            .then(async () => {
              if (g !== gen.current) return;
              for (const cand of c.pendingRemote.splice(0)) await pc.addIceCandidate(cand).catch(() => undefined);
              attempts.current = 0;
              setReconnectAttempt(0);
              dispatch({ kind: "connected" });
            })
            .catch((err: unknown) => {
              if (g === gen.current) onDrop(`could not apply the answer: ${errorMessage(err)}`);
            });
          break;
        }
        case "ice-candidate": {
          const cand = msg.candidate;
          if (!cand || !cand.candidate) break; // end of candidates
          if (c.pc && c.answerApplied && c.pc.remoteDescription) c.pc.addIceCandidate(cand).catch(() => undefined);
          else c.pendingRemote.push(cand);
          break;
        }
        case "error":
          if (msg.fatal === true) {
            fail(fatalError(msg));
            break;
          }
          if (msg.code === "resume_failed") tokens.current?.failed(); // a new conversation
          dispatch(eventToAction(msg)!);
          // The server lost our media (ICE consent expired, DTLS closed); this peer connection
          // may not notice for ~30 s. The session cannot hear us again: start a fresh one.
          if (msg.code === "transport_failed") onDrop("media connection lost");
          break;
        default: {
          const action = eventToAction(msg); // transcript, ai_response, status, metrics
          if (action) dispatch(action);
          // A finished turn is saved under this session's token: it resumes from now on.
          if (msg.type === "ai_response" && msg.final === true) tokens.current?.turnFinished();
        }
      }
    },
    [fail, onDrop, send],
  );

  const attachChannel = useCallback(
    (dc: RTCDataChannel) => {
      conn.current.channels.push(dc);
      dc.onmessage = (e: MessageEvent) => handleMessage(e.data);
    },
    [handleMessage],
  );

  /** Microphone -> peer connection -> offer. Runs once the WebSocket is open. */
  const negotiate = useCallback(
    async (g: number) => {
      const o = opts.current;
      if (!stream.current) {
        const gum = o.getUserMedia ?? defaultGetUserMedia();
        let s: MediaStream;
        try {
          s = await gum(audioConstraints(o.deviceId));
        } catch (err) {
          if (g === gen.current) fail({ code: "microphone_unavailable", message: microphoneErrorMessage(err) });
          return;
        }
        if (g !== gen.current) {
          s.getTracks().forEach((t) => t.stop());
          return;
        }
        stream.current = s;
        setLocalStream(s);
      }
      const s = stream.current;
      const c = conn.current;
      const PC = o.RTCPeerConnectionImpl ?? RTCPeerConnection;
      const pc = new PC({ iceServers: o.iceServers ?? [] });
      c.pc = pc;
      for (const track of s.getAudioTracks()) {
        track.enabled = !mutedRef.current;
        pc.addTrack(track, s);
      }
      attachChannel(pc.createDataChannel("events", { ordered: true }));
      pc.ondatachannel = (e) => attachChannel(e.channel);
      pc.ontrack = (e) => {
        if (!audioEl.current) {
          const el = o.createAudioElement?.() ?? document.createElement("audio");
          el.autoplay = true;
          el.dataset.testid = "remote-audio";
          if (!el.isConnected) document.body.appendChild(el);
          audioEl.current = el;
        }
        playAudio(audioEl.current, e.streams[0] ?? new MediaStream([e.track]));
      };
      pc.onicecandidate = (e) => {
        const cand = e.candidate ? e.candidate.toJSON() : null;
        if (c.offerSent) send({ type: "ice-candidate", candidate: cand });
        else if (o.trickleIce) c.pendingLocal.push(cand); // before the offer went out
      };
      pc.onconnectionstatechange = () => {
        if (g !== gen.current) return;
        if (pc.connectionState === "connected") dispatch({ kind: "connected" });
        else if (pc.connectionState === "failed") onDrop("media connection failed");
      };
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      if (!o.trickleIce) await waitForIceGathering(pc, o.iceGatheringTimeoutMs ?? 2000, c.timers);
      if (g !== gen.current) return;
      send({ type: "offer", sdp: pc.localDescription?.sdp ?? offer.sdp ?? "" });
      c.offerSent = true;
      for (const cand of c.pendingLocal.splice(0)) send({ type: "ice-candidate", candidate: cand });
    },
    [attachChannel, fail, onDrop, send],
  );

  const start = useCallback(() => {
    const o = opts.current;
    const g = gen.current;
    const WS = o.WebSocketImpl ?? WebSocket;
    let ws: WebSocket;
    try {
      ws = new WS(buildSignalingUrl(o.url, o.token));
    } catch (err) {
      fail({ code: "invalid_url", message: errorMessage(err) });
      return;
    }
    conn.current.ws = ws;
    ws.onmessage = (e: MessageEvent) => {
      if (g === gen.current) handleMessage(e.data);
    };
    ws.onopen = () => {
      if (g !== gen.current) return;
      const every = o.pingIntervalMs ?? 15000;
      if (every > 0) conn.current.ping = setInterval(() => send({ type: "ping" }), every);
      negotiate(g).catch((err: unknown) => {
        if (g === gen.current) onDrop(`negotiation failed: ${errorMessage(err)}`);
      });
    };
    ws.onclose = (e: CloseEvent) => {
      if (g === gen.current) onDrop(e.reason || "signaling connection closed", e.code);
    };
  }, [fail, handleMessage, negotiate, onDrop, send]);
  startRef.current = start;

  const connect = useCallback(
    (overrides: Partial<VoiceAgentOptions> = {}) => {
      opts.current = { ...opts.current, ...overrides, deviceId: overrides.deviceId ?? microphoneIdRef.current };
      clearRetry();
      closeTransport();
      stopped.current = false;
      attempts.current = 0;
      setReconnectAttempt(0);
      dispatch({ kind: "clearError" });
      dispatch({ kind: "connecting" });
      start();
    },
    [clearRetry, closeTransport, start],
  );

  const disconnect = useCallback(() => {
    stopped.current = true;
    tokens.current?.forget(); // ended on purpose: the next conversation starts fresh
    clearRetry();
    send({ type: "end" });
    closeTransport();
    releaseMedia();
    setReconnectAttempt(0);
    dispatch({ kind: "disconnected" });
  }, [clearRetry, closeTransport, releaseMedia, send]);

  const sendText = useCallback(
    (text: string): boolean => {
      const t = text.trim();
      if (!t || !send({ type: "text", text: t })) return false;
      dispatch({ kind: "userText", text: t });
      return true;
    },
    [send],
  );

  const interrupt = useCallback(() => send({ type: "interrupt" }), [send]);

  const setMuted = useCallback((m: boolean) => {
    mutedRef.current = m;
    setMutedState(m);
    stream.current?.getAudioTracks().forEach((t) => (t.enabled = !m));
  }, []);

  const selectMicrophone = useCallback(async (deviceId: string) => {
    microphoneIdRef.current = deviceId;
    setMicrophoneId(deviceId);
    opts.current = { ...opts.current, deviceId };
    const pc = conn.current.pc;
    if (!stream.current || !pc) return;
    const gum = opts.current.getUserMedia ?? defaultGetUserMedia();
    const next = await gum(audioConstraints(deviceId));
    const track = next.getAudioTracks()[0];
    if (!track) return;
    track.enabled = !mutedRef.current;
    const sender = pc.getSenders().find((x) => x.track?.kind === "audio");
    await sender?.replaceTrack(track);
    stream.current.getTracks().forEach((t) => t.stop());
    stream.current = next;
    setLocalStream(next);
  }, []);

  const clearError = useCallback(() => dispatch({ kind: "clearError" }), []);

  // Unmount: full teardown, no reconnect.
  useEffect(
    () => () => {
      stopped.current = true;
      clearRetry();
      closeTransport();
      releaseMedia();
      audioEl.current?.remove();
      audioEl.current = null;
    },
    [clearRetry, closeTransport, releaseMedia],
  );

  const { pendingEcho: _p, ...pub } = state;
  return {
    ...pub,
    muted,
    microphoneId,
    localStream,
    reconnectAttempt,
    connect,
    disconnect,
    sendText,
    interrupt,
    setMuted,
    selectMicrophone,
    clearError,
  };
}

export type VoiceAgent = ReturnType<typeof useVoiceAgentWebRTC>;
