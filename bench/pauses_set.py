"""`bench pauses`' questions and how its turns are scored (pure functions: no models, no audio).

Two sets (issue #14's acceptance check, see bench/pauses.py):

- **Split questions**: a question cut where a listener clearly hears that it is unfinished
  ("What is the largest city in" + "Canada?"), each half spoken separately and joined with a
  silence of 0.8, 1.0, 1.2 or 1.5 s (``PAUSES_S``, in turn), sent as one utterance. The turn
  **answered the first half** when any ``ai_response`` event, loud agent audio or a final
  ``transcript`` reached the client before the end of the second half was sent (the turn
  ended at the pause). A final after it that lacks the second half's key words (fewer than
  half of them) is counted as misheard, not as a first-half answer. A turn that failed (timeout, broken session) is
  not a first-half answer but is not a pass either: the pass rate is over every turn asked.
- **Complete questions**: the short questions of bench/accuracy_set.py (no lead-in sentence);
  the server's ``end_of_turn_delay_ms`` (its VAD's end of speech → end of turn), the
  ``preemptive`` flag and the client's voice-to-voice latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .accuracy_set import QUESTIONS, STOPWORDS, normalise_words

PAUSES_S: tuple[float, ...] = (0.8, 1.0, 1.2, 1.5)
EARLY_MS = 300.0
"""Issue #14: the median end-of-turn delay on complete questions is at most this."""
TARGET_PASS = 0.95
"""Issue #14: at least this share of split questions get no reply to their first half."""

SPLITS: tuple[tuple[str, str], ...] = (
    ("What is the largest city in", "Canada?"),
    ("Can you tell me", "how far away the moon is?"),
    ("How many legs does", "a spider have?"),
    ("What is the capital of", "France?"),
    ("I would like to know", "how tall Mount Everest is."),
    ("Which planet is", "closest to the sun?"),
    ("Who wrote", "Romeo and Juliet?"),
    ("What is seven times", "eight?"),
    ("How many days are there in", "a leap year?"),
    ("Tell me a fun fact about", "octopuses."),
    ("What do you call", "a baby kangaroo?"),
    ("How do you say hello in", "Spanish?"),
    ("What is the difference between", "a frog and a toad?"),
    ("Can you recommend a good", "science fiction book?"),
    ("What is the boiling point of", "water in Fahrenheit?"),
    ("In which country are", "the pyramids of Giza?"),
    ("How many strings does", "a standard guitar have?"),
    ("What language do people speak in", "Brazil?"),
    ("Which animal is known as", "the king of the jungle?"),
    ("What is the square root of", "eighty one?"),
    ("I was wondering if you could tell me", "what bees make."),
    ("What is the opposite of", "cold?"),
    ("How many minutes are in", "an hour?"),
    ("What color do you get when you mix", "blue and yellow?"),
)


def complete_questions() -> list[str]:
    """bench accuracy's short questions (one sentence: no lead-in before the question)."""
    return [q.text for q in QUESTIONS if ". " not in q.text]


def pause_for(index: int) -> float:
    return PAUSES_S[index % len(PAUSES_S)]


def second_half_words(first: str, second: str) -> list[str]:
    """The second half's key words that the first half does not already say."""
    said = set(normalise_words(first))
    return [w for w in normalise_words(second) if w not in STOPWORDS and w not in said]


def has_second_half(transcript: str, first: str, second: str) -> bool:
    """Whether a transcript holds the second half: at least half of its key words (rounded
    up, at least one)."""
    need = second_half_words(first, second)
    heard = set(normalise_words(transcript))
    return sum(w in heard for w in need) >= max(1, math.ceil(len(need) / 2))


@dataclass
class SplitTurn:
    voice: str
    first: str
    second: str
    pause_s: float
    ok: bool = False
    """BenchClient.turn got a whole reply."""
    error: str = ""
    transcript: str = ""
    """The server's first final transcript of the turn."""
    transcript_after_ms: float | None = None
    """When it arrived, from the end of the speech sent (negative: before, at the pause)."""
    reply: str = ""
    reasons: list[str] = field(default_factory=list)
    """Why it counts as an answer to the first half (empty: it does not)."""
    misheard: bool = False
    """The final came after the whole question but lacks most of its second half's words."""
    eot_ms: float | None = None
    v2v_ms: float | None = None

    @property
    def first_half_answered(self) -> bool:
        return bool(self.reasons)

    @property
    def passed(self) -> bool:
        return self.ok and not self.reasons


def judge_split(turn: SplitTurn, events: list[dict[str, Any]], speech_end_at: float,
                early_audio_at: float | None) -> SplitTurn:
    """Fill ``turn``'s transcript, reply and reasons from the events the client got during the
    turn (each with ``_at``, monotonic) and the first loud agent audio before the end of the
    speech (None: none)."""
    finals = [e for e in events if e.get("type") == "transcript" and e.get("final")]
    replies = [e for e in events if e.get("type") == "ai_response"]
    if finals:
        turn.transcript = str(finals[0].get("text", ""))
        if speech_end_at:
            turn.transcript_after_ms = round((float(finals[0]["_at"]) - speech_end_at) * 1000)
    final_replies = [str(e.get("text", "")) for e in replies if e.get("final")]
    turn.reply = final_replies[0] if final_replies else ""
    reasons = []
    early = [e for e in replies if speech_end_at and float(e["_at"]) < speech_end_at]
    if early:
        reasons.append(f"reply text {(speech_end_at - float(early[0]['_at'])) * 1000:.0f} ms "
                       "before the end")
    if early_audio_at is not None and speech_end_at:
        reasons.append(f"agent audio {(speech_end_at - early_audio_at) * 1000:.0f} ms before "
                       "the end")
    # A final before the end of the speech: the turn ended at the pause. One after it that
    # lacks the second half's words is a mishearing (flite: 'How doll mount ever stays'),
    # counted apart: the turn did wait for the whole question.
    ended_early = bool(finals) and bool(speech_end_at) and float(finals[0]["_at"]) < speech_end_at
    if ended_early:
        reasons.append(f"final transcript {(speech_end_at - float(finals[0]['_at'])) * 1000:.0f}"
                       " ms before the end")
    elif finals and not has_second_half(turn.transcript, turn.first, turn.second):
        turn.misheard = True
    turn.reasons = reasons
    return turn


@dataclass
class CompleteTurn:
    voice: str
    question: str
    ok: bool = False
    error: str = ""
    transcript: str = ""
    eot_ms: float | None = None
    preemptive: bool = False
    v2v_ms: float | None = None


def from_metrics(turn: CompleteTurn, metrics: dict[str, Any]) -> CompleteTurn:
    eot = metrics.get("end_of_turn_delay_ms")
    turn.eot_ms = float(eot) if isinstance(eot, (int, float)) else None
    turn.preemptive = bool(metrics.get("preemptive"))
    return turn


# --- statistics and tables ----------------------------------------------------------------------


def percentile(values: list[float | None], q: float) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.percentile(vals, q)) if vals else None


def share(count: int, total: int) -> float | None:
    return count / total if total else None


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f} ms"


def _pc(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _cell(text: str, limit: int = 70) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class SplitSummary:
    turns: int
    passed: int
    first_half: int
    failed: int

    @property
    def pass_rate(self) -> float | None:
        return share(self.passed, self.turns)


def summarise_split(turns: list[SplitTurn]) -> SplitSummary:
    return SplitSummary(turns=len(turns), passed=sum(t.passed for t in turns),
                        first_half=sum(t.first_half_answered for t in turns),
                        failed=sum(not t.ok and not t.first_half_answered for t in turns))


@dataclass
class CompleteSummary:
    turns: int
    measured: int
    p50: float | None
    p90: float | None
    early: float | None
    """Share of measured turns that ended within EARLY_MS."""
    preemptive: int
    v2v_p50: float | None


def summarise_complete(turns: list[CompleteTurn]) -> CompleteSummary:
    eot = [t.eot_ms for t in turns if t.eot_ms is not None]
    return CompleteSummary(
        turns=len(turns), measured=len(eot), p50=percentile(eot, 50), p90=percentile(eot, 90),
        early=share(sum(e <= EARLY_MS for e in eot), len(eot)),
        preemptive=sum(t.preemptive for t in turns),
        v2v_p50=percentile([t.v2v_ms for t in turns if t.ok], 50))


def split_rows(by_voice: dict[str, list[SplitTurn]]) -> list[str]:
    rows = ["| voice | turns | no reply to the first half | answered the first half "
            "| failed turns | pauses 0.8 / 1.0 / 1.2 / 1.5 s: first half answered |",
            "|---|---|---|---|---|---|"]
    every: list[SplitTurn] = []
    for voice, turns in [*by_voice.items(), ("**all**", None)]:
        turns = every if turns is None else turns
        if voice != "**all**":
            every += turns
        s = summarise_split(turns)
        per_pause = " / ".join(str(sum(t.first_half_answered for t in turns if t.pause_s == p))
                               for p in PAUSES_S)
        rows.append(f"| {voice} | {s.turns} | {s.passed} ({_pc(s.pass_rate)}) | {s.first_half} "
                    f"| {s.failed} | {per_pause} |")
    return rows


def complete_rows(by_voice: dict[str, list[CompleteTurn]]) -> list[str]:
    rows = ["| voice | turns (measured) | end of turn p50 | p90 | ended within 300 ms "
            "| preemptive | voice-to-voice p50 |", "|---|---|---|---|---|---|---|"]
    every: list[CompleteTurn] = []
    for voice, turns in [*by_voice.items(), ("**all**", None)]:
        turns = every if turns is None else turns
        if voice != "**all**":
            every += turns
        s = summarise_complete(turns)
        rows.append(f"| {voice} | {s.turns} ({s.measured}) | {_ms(s.p50)} | {_ms(s.p90)} "
                    f"| {_pc(s.early)} | {s.preemptive} | {_ms(s.v2v_p50)} |")
    return rows


def verdict(split: list[SplitTurn], complete: list[CompleteTurn]) -> list[str]:
    """Issue #14's two criteria, each PASS or FAIL (or not measured)."""
    s, c = summarise_split(split), summarise_complete(complete)
    lines = []
    if s.turns:
        ok = (s.pass_rate or 0) >= TARGET_PASS
        lines.append(f"- split questions: {s.passed}/{s.turns} ({_pc(s.pass_rate)}) got no reply "
                     f"to their first half (target >= {TARGET_PASS:.0%}): "
                     f"**{'PASS' if ok else 'FAIL'}**")
    if c.measured:
        ok = c.p50 is not None and c.p50 <= EARLY_MS
        lines.append(f"- complete questions: median end-of-turn delay {_ms(c.p50)} (target <= "
                     f"{EARLY_MS:.0f} ms): **{'PASS' if ok else 'FAIL'}**")
    return lines or ["- nothing measured"]


def split_failure_rows(turns: list[SplitTurn]) -> list[str]:
    rows = ["| voice | question | pause | first final transcript (ms after the end) | reply "
            "| why |", "|---|---|---|---|---|---|"]
    for t in turns:
        if t.passed:
            continue
        why = "; ".join(t.reasons) or f"turn failed ({t.error})"
        at = "" if t.transcript_after_ms is None else f" ({t.transcript_after_ms:+.0f})"
        rows.append(f"| {t.voice} | {_cell(t.first + ' / ' + t.second)} | {t.pause_s:g} s "
                    f"| {_cell(t.transcript) or '—'}{at} | {_cell(t.reply) or '—'} | {why} |")
    return rows if len(rows) > 2 else ["No failures."]
