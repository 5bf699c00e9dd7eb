"""What the turn coordinator is told (events) and what it asks for (commands).

Events come from the components: the VAD turn detector, the STT stream, the reply and the
sink's playback reports, and the client (typed text, interrupt, close). Commands go back to the
components; :class:`~voice_agent.pipeline.agent.VoicePipeline` carries them out. Both are plain
data, so the coordinator can be driven by a test that feeds events and reads commands.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ProviderError
from ..core.events import PipelineEvent
from ..core.messages import ChatMessage
from .metrics import TurnMetrics
from .reply import ReplyState

# ── events ────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    heard_s: float = 0.0
    """Seconds of the current reply's audio the user had heard when they began to speak."""


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """The user went quiet for a moment (``stt.pause_ms``); the turn may be about to end."""


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech again after a pause, within the same turn."""


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The turn detector decided the user's turn is over."""

    speech_end_s: float
    """Where the speech ended in the utterance's audio (the rest is silence)."""
    speech_end_at: float
    """Clock time of the last speech frame."""


@dataclass(frozen=True, slots=True)
class InterimTick:
    """Time for another interim transcript (every ``stt.interim_interval_ms`` while speaking)."""


@dataclass(frozen=True, slots=True)
class TranscriptReceived:
    stream: int
    text: str
    final: bool
    covers_s: float
    """Audio of the utterance this transcript covers, from its start."""
    speech_s: float
    """Audio of the utterance up to its last speech frame, when the result arrived."""
    reused: bool = False
    alternatives: tuple[str, ...] = ()
    """The STT's other hearings of ``text`` (a decisive or final decode's), best first."""


@dataclass(frozen=True, slots=True)
class TranscriptFailed:
    stream: int
    error: ProviderError
    final: bool


@dataclass(frozen=True, slots=True)
class TextTyped:
    text: str
    heard_s: float = 0.0


@dataclass(frozen=True, slots=True)
class InterruptRequested:
    heard_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CloseRequested:
    heard_s: float = 0.0


@dataclass(frozen=True, slots=True)
class EndOfTurnScored:
    """How likely the words of a transcript are a whole turn (None: unknown)."""

    stream: int
    probability: float | None
    text: str = ""
    """The words scored (a pause's transcript, or an interim while the user spoke)."""
    gave_way: bool = False
    """Unknown because a model that scores gave way (another session's reply waited for its
    first token), not because the provider cannot score at all."""


@dataclass(frozen=True, slots=True)
class UserIdle:
    """The user said nothing for a while after the agent's reply: say ``line``; with
    ``goodbye`` the session ends once it has been said."""

    line: str
    goodbye: bool = False


@dataclass(frozen=True, slots=True)
class ReplyFirstAudio:
    """The reply's first audio was handed to the sink."""

    reply: int


@dataclass(frozen=True, slots=True)
class ReplyEnded:
    """The reply is over: written, spoken and played out; or it failed (``error``)."""

    reply: int
    error: ProviderError | None = None


TurnInput = (SpeechStarted | SpeechPaused | SpeechResumed | SpeechEnded | InterimTick
             | TranscriptReceived | TranscriptFailed | TextTyped | InterruptRequested
             | CloseRequested | UserIdle | EndOfTurnScored | ReplyFirstAudio | ReplyEnded)

# ── commands ──────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class OpenTranscript:
    """Start an STT stream for a new utterance, fed with the audio kept from before speech was
    confirmed; with ``hear_again`` also with the last utterance, whose transcript was dropped."""

    stream: int
    hear_again: bool = False


@dataclass(frozen=True, slots=True)
class RequestInterim:
    stream: int
    decisive: bool = False
    """The text may become the turn's (a pause: a reply is prepared from it): decoded for
    accuracy, as a final is, not cheaply as the interims shown while the user speaks."""


@dataclass(frozen=True, slots=True)
class FinalizeTranscript:
    stream: int
    speech_end_s: float


@dataclass(frozen=True, slots=True)
class DropTranscript:
    stream: int


@dataclass(frozen=True, slots=True)
class WithdrawInterim:
    """The user went on after a pause while others are in a turn: the pause's transcription,
    if it has not started, is not needed (nothing reads an interim while the user speaks then)."""

    stream: int


@dataclass(frozen=True, slots=True)
class Prefill:
    """Let the LLM read what the user said so far into its prompt cache (no reply)."""

    messages: list[ChatMessage]


@dataclass(frozen=True, slots=True)
class StartReply:
    """Make a reply to ``messages``. A held reply is prepared but neither shown nor heard
    until :class:`ReleaseReply`."""

    reply: int
    messages: list[ChatMessage]
    metrics: TurnMetrics
    state: ReplyState
    held: bool = False


@dataclass(frozen=True, slots=True)
class StartApology:
    """Say the fixed apology (a provider failed): a reply of its own, interruptible."""

    reply: int


@dataclass(frozen=True, slots=True)
class ScoreEndOfTurn:
    """Ask how likely ``messages`` (the history and a transcript) end the turn."""

    stream: int
    messages: list[ChatMessage]
    text: str = ""
    """The transcript's words, handed back with the score."""


@dataclass(frozen=True, slots=True)
class SetEndSilence:
    """The silence that ends the current turn, from now on (until speech resumes)."""

    ms: float


@dataclass(frozen=True, slots=True)
class SayLine:
    """Say a fixed line (an idle prompt, a goodbye): a reply of its own, interruptible."""

    reply: int
    text: str


@dataclass(frozen=True, slots=True)
class EndSession:
    """The conversation is over (the goodbye was said): the session closes."""

    reason: str


@dataclass(frozen=True, slots=True)
class ReleaseReply:
    reply: int


@dataclass(frozen=True, slots=True)
class PauseReply:
    """The user spoke over the released reply: nothing more goes out, the queue is kept."""

    reply: int


@dataclass(frozen=True, slots=True)
class ResumeReply:
    """It was only a backchannel (or a cough): the paused reply goes on where it stopped."""

    reply: int


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Stop the reply now. ``flush``: its audio was released, so the sink is cleared first."""

    reply: int
    flush: bool


@dataclass(frozen=True, slots=True)
class Emit:
    event: PipelineEvent


Command = (OpenTranscript | RequestInterim | WithdrawInterim | FinalizeTranscript
           | DropTranscript | Prefill | StartReply | StartApology | SayLine | ReleaseReply
           | PauseReply | ResumeReply | CancelReply | EndSession | ScoreEndOfTurn | SetEndSilence | Emit)
