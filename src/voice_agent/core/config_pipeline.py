"""Configuration of how turns are processed (``[pipeline]``) and the default backchannels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voice_agent.core.config_section import _Section

DEFAULT_BACKCHANNELS = (
    "uh huh", "uh-huh", "mm hm", "mm-hm", "mhm", "mm", "hmm", "yeah", "yep", "yes", "okay",
    "ok", "right", "uh", "um", "oh", "ah", "i see", "sure", "got it", "alright",
)
"""What a listener says over the agent without taking the turn (pipeline/backchannel.py)."""


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
    hearings_off_at_sessions: int = Field(2, ge=0, le=1000)
    """When this many sessions (this one included) are in a turn at once, the LLM reads the
    best hearing of a question alone, not Whisper's other hearings beside it (stt.alternatives):
    their reading waits on every other session's. 0: always read. Measured (bench latency, two
    pairs each, docs/latency.md): four sessions with the hearings always read: p50 +1 s,
    answered right 35-37 instead of 32-33 of 40; at 3, two sessions at once: p50 +140-400 ms,
    p95 +1.2-1.9 s, right 18 instead of 14-15 of 20, but four at once no righter (30-31 of 40)
    and p95 5.2-5.6 s instead of 4.4 s. Raise it where right answers with two people talking
    matter more than their speed."""
    pause_unscored_at_sessions: int = Field(2, ge=0, le=1000)
    """A pause does not end the turn before its transcript is in (1.2 s at most, the rule's
    verdict_wait_ms): on a slow machine, or beside other sessions (0.6-1.6 s here), the
    transcript outlasted the fixed silence, which then answered half a question. Below this
    many sessions in a turn at once (this one included) the words are scored, and the score
    sets the wait. From it on, words that look like a whole question ("...?" after a word
    that can end one, or "...." when the sentence opens like a question or a request:
    pipeline/end_of_turn.py looks_finished) end the turn unscored at the
    fixed silence, since waiting for every score cost the four-session p95 +20-35% (bench
    latency A/B, docs/end_of_turn.md); cut-off or statement-like words are still scored. 0:
    always score."""
    idle_prompt_s: float = Field(30.0, ge=0.0, le=3600.0)
    """Silence after the agent's reply before it asks ``idle_prompt`` (0: never). Keep it
    below server.idle_timeout_s, which ends a silent session without a word."""
    idle_prompt: str = "Are you still there?"
    idle_goodbye_s: float = Field(30.0, ge=0.0, le=3600.0)
    """Silence after that prompt before ``idle_goodbye`` is said and the session ends (0:
    never)."""
    idle_goodbye: str = "It seems you've stepped away. Goodbye for now!"
