"""bench accuracy's pure parts: normalisation, WER, the heard/answered rules, questions, voices.

No models and no audio: the bench itself needs the real models (`voice-agent bench accuracy`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bench.accuracy import Scored, failure_kind, merge_finals, score, settle, summarise
from bench.accuracy_set import (QUESTIONS, Question, answered_right, heard_right, key_words,
                                normalise, normalise_words, number_words, wer, word_edits)
from bench.client import TurnResult
from bench.voices import ENGINES, VOICES, select_voices


@pytest.mark.parametrize("text, expected", [
    ("What is the capital of France?", "what is the capital of france"),
    ("What is 2 plus 2?", "what is two plus two"),
    ("It has 24 hours.", "it has twenty four hours"),
    ("twenty-four", "twenty four"),
    ("A piano has 88 keys", "a piano has eighty eight keys"),
    ("1,000 people", "one thousand people"),
    ("3.5%", "three point five percent"),
    ("the 2nd and 21st", "the second and twenty first"),
    ("What's that? It's CO2.", "what is that it is co two"),
    ("Don't, can't, won't; I'm", "do not can not will not i am"),
    ("The colour grey", "the color gray"),
    ("The U.K.", "the u k"),
    ("What is 10-3? 2+2=4", "what is ten minus three two plus two equals four"),
    ("a well-known 24-hour shop", "a well known twenty four hour shop"),
    ("", ""),
])
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_number_words() -> None:
    assert number_words(0) == "zero"
    assert number_words(19) == "nineteen"
    assert number_words(40) == "forty"
    assert number_words(101) == "one hundred one"
    assert number_words(2024) == "two thousand twenty four"
    assert number_words(1_000_000) == "one million"


def test_word_edits_and_wer() -> None:
    assert word_edits([], []) == 0
    assert word_edits("a b c".split(), "a b c".split()) == 0
    assert word_edits("a b c".split(), "a x c".split()) == 1  # substitution
    assert word_edits("a b c".split(), "a c".split()) == 1  # deletion
    assert word_edits("a b c".split(), "a b b c".split()) == 1  # insertion
    assert word_edits("a b".split(), []) == 2
    assert wer("What is two plus two?", "What is 2 plus 2?") == 0.0
    assert wer("What is the capital of France?", "What is the capital and friends?") == \
        pytest.approx(2 / 6)
    assert wer("What do bees make?", "") == 1.0


def test_heard_right() -> None:
    q = "Which planet is closest to the sun?"
    assert key_words(q) == ["planet", "closest", "sun"]
    assert heard_right(q, "Which planet is closest to the Sun?")
    assert heard_right(q, "which planet in closest to the sun?")  # a function word missed
    assert not heard_right(q, "Which plant is closest to the sun?")  # a key word missed
    assert not heard_right(q, "")
    assert heard_right("What is two plus two?", "What is 2 plus 2?")
    assert not heard_right("What do bees make?", "What do these make?")
    assert not heard_right("What is frozen water called?", "What is frozen water cold?")


def test_answered_right() -> None:
    spider = Question("How many legs does a spider have?", ("eight", "8"))
    assert answered_right(spider, "A spider has eight legs.")
    assert answered_right(spider, "A spider has 8 legs.")
    assert not answered_right(spider, "A spider has eighteen legs.")  # whole words only
    assert not answered_right(spider, "")
    uk = Question("In which country is London?", ("england", "united kingdom"))
    assert answered_right(uk, "London is in the United Kingdom.")
    assert not answered_right(uk, "London is a united city in the kingdom.")  # a phrase, in order


def test_question_set() -> None:
    assert len(QUESTIONS) >= 40
    assert len({q.text for q in QUESTIONS}) == len(QUESTIONS)
    assert sum(len(normalise_words(q.text)) >= 12 for q in QUESTIONS) >= 4  # a few longer ones
    for q in QUESTIONS:
        assert q.text.strip() and q.answers, q
        assert key_words(q.text), q
        words = normalise_words(q.text)
        for a in q.answers:
            answer = normalise_words(a)
            assert answer, (q, a)
            # An answer that is in the question would be "right" for a reply that echoes it.
            assert not any(words[i:i + len(answer)] == answer for i in range(len(words))), (q, a)


def test_voice_list(tmp_path: Path) -> None:
    names = [v.name for v in VOICES]
    assert len(names) == len(set(names))
    assert {v.engine for v in VOICES} == set(ENGINES)
    assert {v.voice for v in VOICES if v.engine == "flite"} == {"kal", "slt", "awb", "rms"}
    out = tmp_path / "out.wav"
    text = "What is the capital of France?"
    for v in VOICES:
        assert v.describe()
        cmd = v.command(text, out)
        if v.engine == "piper":
            assert cmd is None and 0.5 <= v.rate <= 2.0
            continue
        assert cmd is not None and cmd[0] == v.engine
        assert cmd.count(text) == 1 and cmd.count(str(out)) == 1
        assert all(isinstance(a, str) and a for a in cmd)
        if v.engine == "espeak-ng":
            assert cmd[cmd.index("-v") + 1] == v.voice
            assert 80 <= int(cmd[cmd.index("-s") + 1]) <= 400
            assert cmd[cmd.index("-w") + 1] == str(out) and cmd[-1] == text
        else:
            assert cmd[cmd.index("-voice") + 1] == v.voice
            assert cmd[cmd.index("-t") + 1] == text and cmd[cmd.index("-o") + 1] == str(out)


def test_select_voices() -> None:
    assert select_voices(None) == list(VOICES)
    assert [v.name for v in select_voices(["flite-slt", "espeak-us"])] == ["flite-slt", "espeak-us"]
    with pytest.raises(ValueError, match="nope"):
        select_voices(["nope"])


def _scored(question: Question, transcript: str, reply: str, ok: bool = True,
            v2v: float | None = 1000.0) -> Scored:
    turn = TurnResult(question.text, ok=ok, v2v_ms=v2v if ok else None,
                      error="" if ok else "timeout")
    return score("v", question, turn, [transcript] if transcript else [],
                 [reply] if reply else [])


def test_summary_counts_failed_turns_as_wrong() -> None:
    france = Question("What is the capital of France?", ("paris",))
    good = _scored(france, "What is the capital of France?", "Paris.", v2v=1000.0)
    misheard = _scored(france, "What is the capital and friends?", "A TV series.", v2v=2000.0)
    failed = _scored(france, "", "", ok=False)
    s = summarise([good, misheard, failed])
    assert (s.turns, s.ok) == (3, 2)
    assert s.wer == pytest.approx((0 + 2 + 6) / 18)
    assert s.heard == pytest.approx(1 / 3) and s.answered == pytest.approx(1 / 3)
    assert s.p50 == 1500.0
    assert failure_kind(misheard) == "misheard, answer wrong (after mishearing)"
    assert failure_kind(failed) == "turn failed (timeout)"


def test_score_joins_a_question_cut_into_two_turns() -> None:
    q = Question("I am going on a trip to London next month. In which country is London?",
                 ("england",))
    turn = TurnResult(q.text, ok=True, v2v_ms=900.0)
    s = score("v", q, turn, ["I am going on a trip to London next month.",
                             "In which country is London?"], ["Have fun!", "England."])
    assert s.finals == 2 and s.edits == 0 and s.heard and s.answered
    assert failure_kind(s) == "cut into 2 turns"


def test_merge_finals_keeps_a_retranscribed_utterance_once() -> None:
    first = "My friend is baking a cake this afternoon."
    whole = "My friend is baking a cake this afternoon. How many eggs are in a dozen?"
    assert merge_finals([first, whole]) == whole  # the second final covers the first again
    assert merge_finals([first, "How many eggs are in a dozen?"]) == whole
    assert merge_finals(["", " Paris. "]) == "Paris."
    assert merge_finals([]) == ""
    assert merge_finals(["Yes.", "Yes."]) == "Yes."  # one utterance transcribed twice


def test_settle_waits_for_a_late_second_reply() -> None:
    """A question cut in two gets a second reply after the timed turn: settle waits it out."""
    async def main() -> tuple[bool, float, bool]:
        now = time.monotonic()
        events = [{"type": "status", "processing_status": "listening", "_at": now}]

        async def second_reply() -> None:
            await asyncio.sleep(0.05)
            events.append({"type": "status", "processing_status": "speaking",
                           "_at": time.monotonic()})
            await asyncio.sleep(0.15)
            events.append({"type": "status", "processing_status": "listening",
                           "_at": time.monotonic()})

        task = asyncio.create_task(second_reply())
        ok = await settle(events, quiet_s=0.1, limit_s=2.0, poll_s=0.01)
        waited = time.monotonic() - now
        await task
        stuck = [{"type": "status", "processing_status": "speaking", "_at": time.monotonic()}]
        gave_up = await settle(stuck, quiet_s=0.01, limit_s=0.05, poll_s=0.01)
        return ok, waited, gave_up

    ok, waited, gave_up = asyncio.run(main())
    assert ok and waited >= 0.3  # 0.2 s of second reply, then 0.1 s quiet after it
    assert not gave_up
