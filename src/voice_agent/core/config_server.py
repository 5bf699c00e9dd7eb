"""Configuration of the HTTP server and its limits (``[server]``) and of the WebRTC transport
(``[webrtc]``)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from voice_agent.core.config_section import _Section


class IceServer(_Section):
    urls: list[str]
    username: str | None = None
    credential: SecretStr | None = None


class WebRTCConfig(_Section):
    """WebRTC transport."""

    mode: Literal["audio_only", "data_channel", "audio_video"] = "audio_only"
    ice_servers: list[IceServer] = Field(default_factory=list)
    """STUN/TURN servers; none by default so that nothing leaves the machine."""
    host_addresses: list[str] = Field(default_factory=list)
    """Local addresses ICE may offer (e.g. ["127.0.0.1"] for loopback only). Empty: every
    interface, as aioice does by default. Applies to the whole server process."""
    receive_buffer_frames: int = Field(1, ge=1, le=8)
    """Audio frames (20 ms each) that must follow one before the server hears it. aiortc
    holds 4 (80 ms) to smooth playout; the server only listens, so 1 is enough to put
    reordered packets back in order, and the end of the user's speech is heard 60 ms sooner."""
    advertised_address: str | None = None
    """The address this worker's ICE host candidates carry instead of its local one: a
    container's or a NAT's public address (as mediasoup's ``announcedIp``). The port is kept,
    so the media ports must be forwarded as they are (docs/deploy.md). None: the local ones."""

    @field_validator("advertised_address")
    @classmethod
    def _an_ip_address(cls, value: str | None) -> str | None:
        # ICE candidates carry addresses, not names: a host name would only fail at the first
        # offer, inside a session; refused at start-up instead.
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"webrtc.advertised_address must be an IP address, got {value!r}"
                             ) from None


class ServerConfig(_Section):
    """HTTP server and its limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_sessions: int = Field(4, ge=1, le=1000)
    """The server's capacity: sessions open at once; one more is refused up front with
    ``busy`` (close 1013) and /v3/health's ``load`` is open sessions / this. Default 4, as
    measured on the 2-core reference machine with every session speaking at once
    (docs/benchmarks.md): since the OpenMP spin fix 4 sessions answer every turn, p50 ~2x
    one session's (2.9-3.4 s against 1.4-1.6 s, docs/latency.md); before it they answered
    15 to 40 of 40 within 30 s (p50 9-21 s) and the default was 2. Raise it on a bigger
    machine once `VOICE_AGENT_SERVER__MAX_SESSIONS=N voice-agent bench latency --sessions 1 2
    4 8` shows N answering every turn."""
    idle_timeout_s: float = Field(120.0, gt=0)
    """A conversation with no speech, no typed message and no reply for this long is closed
    with session_timeout (close 4000). Pings, silence and media packets do not keep it open:
    four such sockets would otherwise hold every slot until max_session_s."""
    max_session_s: float = Field(3600.0, gt=0)
    """Longest session; then it is closed with session_timeout (close 4001)."""
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    """Largest JSON text frame; a larger one gets message_too_large and is dropped."""
    messages_per_second: float = Field(50.0, gt=0)
    """JSON messages per second per connection (bursts of twice that); more are dropped with
    one rate_limited error per second."""
    header_timeout_s: float = Field(10.0, gt=0)
    """A request line and its headers must arrive within this long from the connection's
    opening (on a keep-alive connection: from the first byte of its next request); else the
    server answers 408 and closes the connection."""
    max_connections_per_client: int = Field(32, ge=1)
    """Open TCP connections per client IP (HTTP and WebSocket alike, loopback included); one
    more is closed at once, unanswered. A browser page needs ~8."""
    cors_origins: list[str] = Field(default_factory=list)
    """Web origins (e.g. "https://app.example") allowed to call the HTTP API from a browser and
    to open the WebSockets. Empty: no CORS headers; WebSockets from pages of this host or of
    loopback only. "*" is never implied, also not when auth_token is set."""
    audio_burst_s: float = Field(2.0, gt=0.0, le=600.0)
    """Audio a /ws/v3/audio client may send ahead of real time before its reads are paced."""
    audio_speed: float = Field(1.0, ge=1.0, le=1000.0)
    """How many times real time a /ws/v3/audio client may send audio after the burst (1: a
    microphone's pace). 60 s of speech sent in 1.5 s made VAD and Whisper run ~40x real time
    for one session and slowed every other session's replies 15-18x."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names (or addresses) besides localhost, 127.0.0.1, [::1] and ``host`` that clients
    may reach this server by, e.g. ["voice.lan", "192.168.1.20"] when serving a LAN; "*" allows
    any. A request with another ``Host`` header gets 403, HTTP and WebSockets alike, token or
    not: that is what stops a DNS-rebinding web page from reading the conversations."""
    transcripts_dir: Path = Path("transcripts")
    """Each conversation is appended here as JSON lines (<session_id>.jsonl), flushed per
    record; read back at GET /v3/sessions/{id}/transcript."""
    malloc_arena_max: int = Field(2, ge=0, le=64)
    """glibc malloc arenas for the server's threads (0: glibc's default of 8 per core). Few
    arenas keep the memory that model threads free reusable instead of resident."""
    loop_stall_log_ms: int = Field(200, ge=0, le=60_000)
    """When the event loop has not run for this long, the log gets the stack its thread is
    at (once per stall, at most every 10 s): what blocked it, or a wait in ``select`` that
    other threads starved (core/loop_stall.py). 200: the longest audio frame gap #15 allows.
    0: off."""
    model_threads_nice: int = Field(5, ge=0, le=19)
    """Model work (Whisper, llama.cpp, Piper and their thread pools) runs this many nice steps
    below the event loop, which carries every session's audio: under load the loop then gets
    the CPU it needs at once (Linux; 0 turns this off)."""
    llm_threads_nice: int | None = Field(None, ge=0, le=19)
    """Nice steps of the local LLM's threads below the event loop (None: model_threads_nice).
    Above model_threads_nice, Whisper's and Piper's short calls, which a user waits for, get
    the cores first when they meet the LLM's long batch of replies."""
    openmp_spin_count: int | None = Field(1000, ge=0, le=10**9)
    """How many times an idle OpenMP thread of Whisper or llama.cpp spins before it sleeps
    (``GOMP_SPINCOUNT``, set before the models load unless already in the environment; None:
    libgomp's own ~300,000, some 15 ms here). With the libraries side by side on 2 cores a
    thread spinning for a partner that another library's thread put off the core held that
    core for nothing: in-process, a transcription while the LLM generated took 200-500 ms
    and the LLM ran at 2-8 tokens/s at the default, 210 ms and 6.2-6.5 tokens/s at 1000; the
    LLM alone 12.6 vs 12.1 tokens/s (docs/latency.md, *OpenMP threads that spin*)."""
    take_turns_on_cores: bool = False
    """Whisper's transcriptions, the LLM's end-of-turn scores and the start of each reply
    (llama.cpp reading its prompt, up to its first token, at most 1.5 s) take turns on the
    cores instead of running at once. Side by side on 2 cores each library's threads wait on
    the other's: a 0.1 s transcription and a 0.1 s score each took ~2 s (in-process). Off by
    default: with 4 sessions at once the finals then waited behind reply starts (bench
    latency A/B, docs/latency.md: p50 7.2 s off / 7.7 s on, p95 18.0 / 12.4 s, one late turn
    on); within one session the pause's transcript already waits for a score on its way."""
    trim_memory_after_session: bool = True
    """After each session ends, collect its reference cycles and hand free heap memory back to
    the kernel (gc.collect + glibc malloc_trim); objects from start-up are frozen out of the
    collector so this takes milliseconds."""
    # -- beyond one machine (docs/deploy.md) ---------------------------------------------------
    redis_url: str | None = None
    """Shared state for several workers, e.g. ``redis://127.0.0.1:6379/0``: every session's
    SessionInfo with its worker (under a heartbeat TTL), max_sessions across all workers,
    transcripts and resumable conversations readable from any worker. None: one process, as
    without Redis."""
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
                           min_length=1, max_length=200, pattern=r"^[^\s]+$")
    """This worker's name in the shared registry and in /v3/sessions' ``worker`` field;
    default host:pid."""
    worker_max_sessions: int | None = Field(None, ge=1, le=1000)
    """With several workers (redis_url): this worker's own capacity, what its ``load`` (and
    so the balancer's weight) is counted against, while ``max_sessions`` caps the sessions of
    every worker together. None: max_sessions (each worker may take the whole cluster's
    sessions). E.g. two 2-core workers: max_sessions 4, worker_max_sessions 2."""
    registry_ttl_s: float = Field(6.0, ge=1.0, le=300.0)
    """A worker's sessions leave the shared registry this long after its last heartbeat
    (heartbeats every third of it): a killed worker's sessions are gone within this."""
    lb_agent_port: int | None = Field(None, ge=1, le=65535)
    """TCP port of the HAProxy agent-check responder (server/lb_agent.py): it answers this
    worker's weight from its ``load``. None: not started."""
