"""One WebRTC peer connection per session: the user's audio in, the agent's audio out, and an
optional "events" data channel that mirrors the signaling messages."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription, candidate_from_sdp
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCTransportStats,
)

from ..core.config import V3Config
from . import audio_level
from .audio_in import InboundStats, PushAudio, consume_audio_track, drain_track
from .audio_out import FrameQueue, OutgoingAudioTrack
from .ice import advertise_host_candidates
from .protocol import ErrorCode, IceCandidateInit
from .receive_buffer import audio_receive_buffer_frames, set_audio_receive_buffer

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "events"
OPUS_CLOCK = 48_000


class TransportError(Exception):
    """A signaling step failed; ``code`` is an :class:`ErrorCode` sent back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def rtc_configuration(config: V3Config) -> RTCConfiguration:
    servers = [
        RTCIceServer(urls=s.urls, username=s.username,
                     credential=s.credential.get_secret_value() if s.credential else None)
        for s in config.webrtc.ice_servers
    ]
    # An explicit empty list: aiortc's default would be a public STUN server.
    return RTCConfiguration(iceServers=servers)


class WebRTCSession:
    def __init__(self, session_id: str, config: V3Config, *, push_audio: PushAudio,
                 on_message: Callable[[str | bytes], Awaitable[None]],
                 on_state: Callable[[str], Awaitable[None]]) -> None:
        self.session_id = session_id
        self.config = config
        self.mode = config.webrtc.mode
        # The pipeline exists before the offer (typed text works without media): its sink is
        # this queue, which drops audio until a track takes its frames.
        self.sink = FrameQueue()
        self.sink.attached = False
        self.inbound = InboundStats()
        self._video_frames = [0]
        self._push_audio = push_audio
        self._on_message = on_message
        self._on_state = on_state
        self._pc: RTCPeerConnection | None = None
        self._candidates_ended = False
        """The client sent end-of-candidates: any later candidate is refused."""
        self._track: OutgoingAudioTrack | None = None
        self._audio_in: MediaStreamTrack | None = None
        self._channel: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._answered = False
        self._closed = False

    # -- signaling ----------------------------------------------------------------------------
    async def handle_offer(self, sdp: str) -> str:
        """Apply the client's offer; return the answer SDP (it carries our candidates)."""
        if self._closed:
            raise TransportError(ErrorCode.INTERNAL, "session is closed")
        if self._answered:
            raise TransportError(ErrorCode.DUPLICATE_OFFER,
                                 "an offer was already answered; renegotiation is not supported")
        if not sdp.lstrip().startswith("v=0"):
            raise TransportError(ErrorCode.INVALID_SDP, "SDP must start with 'v=0'")
        media = {line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")}
        if not media & {"audio", "application"}:
            # A video-only offer would be answered, and then nothing could ever be heard.
            raise TransportError(ErrorCode.INVALID_SDP,
                                 "the offer has no audio (and no data channel); offer an audio "
                                 "track with Opus, PCMU or PCMA")
        pc = self._new_peer_connection()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if any(t.kind == "audio" for t in pc.getTransceivers()):
                self._track = OutgoingAudioTrack(self.sink)
                pc.addTrack(self._track)
                self.sink.attached = True
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises many kinds on garbage SDP
            self.sink.attached = False
            self._track = None
            self._pc = None
            await pc.close()
            hint = (" (no codec in common: audio needs Opus, PCMU or PCMA)"
                    if "send parameters" in str(exc) else "")
            raise TransportError(ErrorCode.INVALID_SDP,
                                 f"cannot use this offer: {exc or type(exc).__name__}{hint}") from None
        self._answered = True
        # A container's or NAT's public address in place of the local one (ice.py).
        return advertise_host_candidates(pc.localDescription.sdp,
                                         self.config.webrtc.advertised_address)

    async def add_candidate(self, init: IceCandidateInit | None) -> None:
        pc = self._pc
        if pc is None or pc.remoteDescription is None:
            raise TransportError(ErrorCode.NO_OFFER, "send the offer before ICE candidates")
        text = (init.candidate if init is not None else "").strip()
        if self._candidates_ended:
            if not text:
                return  # a second end (Firefox sends an empty candidate, then null)
            raise TransportError(ErrorCode.INVALID_CANDIDATE,
                                 "ICE candidate after end-of-candidates")
        if init is not None and text:
            _check_mline(init, pc.remoteDescription.sdp)
        try:
            if not text:
                self._candidates_ended = True
                await pc.addIceCandidate(None)  # end of candidates
                return
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
            candidate.sdpMid = init.sdpMid if init is not None else None
            candidate.sdpMLineIndex = init.sdpMLineIndex if init is not None else None
            if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
                candidate.sdpMLineIndex = 0  # bundle: every m-line shares the first transport
            await pc.addIceCandidate(candidate)
        except Exception as exc:
            raise TransportError(ErrorCode.INVALID_CANDIDATE, f"bad ICE candidate: {exc}") from None

    # -- peer connection ----------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: transport task failed: %r", self.session_id, task.exception())

    def _new_peer_connection(self) -> RTCPeerConnection:
        audio_level.install()  # idempotent: aiortc's per-frame level without its Python loop
        pc = RTCPeerConnection(rtc_configuration(self.config))
        self._pc = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                set_audio_receive_buffer(pc, track, self.config.webrtc.receive_buffer_frames)
                self._audio_in = track
                self._spawn(consume_audio_track(track, self._push_audio, self.inbound))
            else:
                if self.mode != "audio_video":
                    log.info("session %s: video track ignored in %s mode", self.session_id, self.mode)
                self._spawn(drain_track(track, self._video_frames))

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != EVENTS_CHANNEL:
                log.info("session %s: ignoring data channel %r", self.session_id, channel.label)
                return
            self._channel = channel
            inbox: asyncio.Queue[str | bytes] = asyncio.Queue()
            # One consumer keeps the messages in order (a text then an interrupt, say).
            self._spawn(self._consume_channel(inbox))

            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                inbox.put_nowait(message)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is self._pc and not self._closed:
                await self._on_state(pc.connectionState)

        return pc

    async def _consume_channel(self, inbox: asyncio.Queue[str | bytes]) -> None:
        while True:
            message = await inbox.get()
            try:
                await self._on_message(message)
            except Exception:  # the handler reports errors itself; this is a last resort
                log.exception("session %s: data channel message failed", self.session_id)

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState if self._pc is not None else "new"

    def send_data(self, message: dict[str, Any]) -> None:
        """Mirror a server message over the data channel when it is open."""
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(json.dumps(message))
            except Exception as exc:  # the channel closed between the check and the send
                log.debug("session %s: data channel send failed: %r", self.session_id, exc)

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "connection_state": self.connection_state,
            "ice_connection_state": self._pc.iceConnectionState if self._pc else "new",
            "data_channel": self._channel.readyState if self._channel else None,
            "packets_sent": 0, "bytes_sent": 0, "packets_received": 0, "bytes_received": 0,
            "audio_packets_sent": 0, "audio_bytes_sent": 0, "audio_packets_received": 0,
            "packets_lost": 0, "jitter_ms": None, "round_trip_time_ms": None,
            "inbound_audio_s": round(self.inbound.seconds, 3),
            "inbound_peak": round(self.inbound.peak, 4),
            "outbound_queued_s": round(self.sink.queued_s(), 3),
            "video_frames_received": self._video_frames[0],
        }
        if self._pc is None:
            return out
        if self._audio_in is not None:
            out["receive_buffer_frames"] = audio_receive_buffer_frames(self._pc, self._audio_in)
        report = await self._pc.getStats()
        for s in report.values():
            if isinstance(s, RTCTransportStats):
                out["packets_sent"] += s.packetsSent
                out["bytes_sent"] += s.bytesSent
                out["packets_received"] += s.packetsReceived
                out["bytes_received"] += s.bytesReceived
            elif isinstance(s, RTCOutboundRtpStreamStats) and s.kind == "audio":
                out["audio_packets_sent"] += s.packetsSent
                out["audio_bytes_sent"] += s.bytesSent
            elif isinstance(s, RTCInboundRtpStreamStats) and s.kind == "audio":
                out["audio_packets_received"] += s.packetsReceived
                out["packets_lost"] += s.packetsLost
                out["jitter_ms"] = round(s.jitter * 1000 / OPUS_CLOCK, 2)  # RTP clock units
            elif isinstance(s, RTCRemoteInboundRtpStreamStats) and s.kind == "audio":
                out["round_trip_time_ms"] = round(s.roundTripTime * 1000, 2)
        return out

    async def close(self) -> None:
        """Release the peer connection, tracks and tasks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.sink.attached = False
        if self._track is not None:
            self._track.stop()
        if self._pc is not None:
            try:
                await self._pc.close()
            except Exception as exc:
                log.warning("session %s: closing the peer connection: %r", self.session_id, exc)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._channel = None
        self._audio_in = None
        self._pc = None


def _check_mline(init: IceCandidateInit, remote_sdp: str) -> None:
    """A candidate must name an m-line of the client's offer, by ``sdpMid`` or index (both
    agreeing when both are given); aiortc drops any other silently, and the client would wait
    for a connection over a candidate that was never used."""
    mids = [m.rtp.muxId for m in SessionDescription.parse(remote_sdp).media]
    index = init.sdpMLineIndex
    if init.sdpMid is not None and init.sdpMid not in mids:
        raise TransportError(ErrorCode.INVALID_CANDIDATE,
                             f"no m-line with sdpMid {init.sdpMid[:32]!r} in the offer "
                             f"(its mids: {', '.join(mids)})")
    if index is not None and index >= len(mids):
        raise TransportError(ErrorCode.INVALID_CANDIDATE,
                             f"sdpMLineIndex {index} is past the offer's {len(mids)} m-lines")
    if init.sdpMid is not None and index is not None and mids[index] != init.sdpMid:
        raise TransportError(ErrorCode.INVALID_CANDIDATE,
                             f"sdpMid {init.sdpMid[:32]!r} is not m-line {index}")
