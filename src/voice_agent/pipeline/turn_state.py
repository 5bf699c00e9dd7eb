"""The turn coordinator's states and its record of a reply (pipeline/turn.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .metrics import TurnMetrics
from .reply import ReplyState


class TurnState(Enum):
    LISTENING = "listening"
    """Nobody speaks: waiting for speech or a typed message."""
    USER_SPEAKING = "user_speaking"
    """The user speaks; a transcript stream is open."""
    USER_PAUSED = "user_paused"
    """The user went quiet mid-turn; a reply may be prepared and held back."""
    TRANSCRIBING = "transcribing"
    """The turn ended; the final transcript is on its way."""
    REPLYING = "replying"
    """A reply is released: being written, spoken, or played out."""
    CLOSED = "closed"


@dataclass
class TurnReply:
    id: int
    user_text: str
    metrics: TurnMetrics
    state: ReplyState
    stream: int | None = None
    """The transcript stream a held reply was made from."""
    heard_as: tuple[str, ...] = ()
    """The STT's other hearings of ``user_text``: the LLM reads them beside it."""
    apology: bool = False
    """A fixed line (the apology, an idle prompt), not an answer: no history, no metrics."""
    goodbye: bool = False
    early: bool = False
    """Made from an interim while the user still spoke (issue #14, preemptive reply): never
    released before a pause's transcript confirms its words."""
