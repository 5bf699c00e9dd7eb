"""`bench accuracy`'s questions and how a turn is scored (pure functions: no models, no audio).

Each question is spoken (bench/voices.py); its text is also the expected transcript. Scoring:

- **Word error rate** (WER): word-level edit distance (substitutions + deletions + insertions)
  between the normalised question and the normalised final transcript, over the question's word
  count. Per voice and overall it is the sum of edits over the sum of question words (a corpus
  WER, so long questions weigh by their length).
- **Heard right**: the normalised transcript is the question (WER 0), *or* it contains every
  key word of the question: its words less the function words in ``STOPWORDS`` ("which planet
  in closest to the sun" still has planet, closest, sun). A turn with no transcript is not.
- **Answered right**: one of the question's expected answers, normalised, occurs as whole
  words in the normalised final reply ("eight" does not match "eighteen"). Answers are chosen
  so that none occurs in the question itself (an echo of the question is no answer).

Normalisation, a simplified form of Whisper's English normaliser: lower case; common
contractions spelled out ("what's" -> "what is", "don't" -> "do not"); digits as words ("24" ->
"twenty four", "1,000" -> "one thousand", "3.5" -> "three point five", "2nd" -> "second"; digits
inside a word too: "CO2" -> "co two"); "-", "+" and "=" between digits as "minus", "plus",
"equals" ("10-3"); a few British spellings as American; hyphens and other punctuation as spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    text: str
    answers: tuple[str, ...]
    """Any of these in the reply (after normalisation, as whole words) counts as right."""


def _q(text: str, *answers: str) -> Question:
    return Question(text, tuple(answers))


QUESTIONS: tuple[Question, ...] = (
    # A longer question (a lead-in sentence, then the question) after every five short ones,
    # so that --limit keeps some.
    _q("What is the capital of France?", "paris"),
    _q("How many legs does a spider have?", "eight", "8"),
    _q("What is two plus two?", "four", "4"),
    _q("Which planet is closest to the sun?", "mercury"),
    _q("What do bees make?", "honey"),
    _q("My friend is baking a cake this afternoon. How many eggs are in a dozen?",
       "twelve", "12"),
    _q("What is the capital of Japan?", "tokyo"),
    _q("How many days are in a week?", "seven", "7"),
    _q("What color is the sky on a clear day?", "blue"),
    _q("What is the largest ocean on Earth?", "pacific"),
    _q("What is frozen water called?", "ice"),
    _q("I am going on a trip to London next month. In which country is London?",
       "england", "united kingdom", "uk", "u.k.", "britain"),
    _q("What is the capital of Italy?", "rome"),
    _q("Which animal is known as the king of the jungle?", "lion", "lions"),
    _q("How many hours are in a day?", "twenty four", "24"),
    _q("What is ten minus three?", "seven", "7"),
    _q("What is the opposite of hot?", "cold"),
    _q("My little brother asked me this morning. What color do you get when you mix blue "
       "and yellow?", "green"),
    _q("What gas do plants take in from the air?", "carbon dioxide", "co2"),
    _q("What is the capital of Spain?", "madrid"),
    _q("How many months are in a year?", "twelve", "12"),
    _q("Which country is home to the kangaroo?", "australia"),
    _q("What is the biggest planet in our solar system?", "jupiter"),
    _q("We are learning about space at school this week. Which planet is known as the red "
       "planet?", "mars"),
    _q("What is five times five?", "twenty five", "25"),
    _q("In which country are the pyramids of Giza?", "egypt"),
    _q("What is the tallest animal in the world?", "giraffe", "giraffes"),
    _q("How many sides does a triangle have?", "three", "3"),
    _q("What is the capital of Germany?", "berlin"),
    _q("I want to learn a new instrument. How many strings does a standard guitar have?",
       "six", "6"),
    _q("Which fruit is yellow and curved?", "banana", "bananas"),
    _q("What language do people mainly speak in Brazil?", "portuguese"),
    _q("Who wrote Romeo and Juliet?", "shakespeare"),
    _q("How many minutes are in an hour?", "sixty", "60"),
    _q("What is the largest continent?", "asia"),
    _q("I am making pasta for dinner tonight. At what temperature in degrees Celsius does "
       "water boil?", "one hundred", "a hundred", "100"),
    _q("What is the capital of Canada?", "ottawa"),
    _q("What is the square root of nine?", "three", "3"),
    _q("How many wheels does a bicycle have?", "two", "2"),
    _q("What do you call a baby cat?", "kitten"),
    _q("What is the longest river in Africa?", "nile"),
    _q("Which metal is liquid at room temperature?", "mercury"),
    _q("What is the name of the star at the center of our solar system?", "sun"),
    _q("Can you tell me in one short sentence which farm animal gives us wool?", "sheep"),
)

STOPWORDS = frozenset("""
a an the is are was were be been am of in on at to into from for with by about as and or but
do does did done what which who whom whose how many much when where why there here it its this
that these those i me my we us our you your he she they them their can could would should will
shall may might have has had tell please get so not""".split())
"""Function words: the rest of a question's words are its key words (see heard_right)."""

# --- normalisation ------------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth",
            "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_BRITISH = {"colour": "color", "colours": "colors", "centre": "center", "favourite": "favorite",
            "metre": "meter", "metres": "meters", "litre": "liter", "grey": "gray",
            "neighbour": "neighbor", "theatre": "theater", "ok": "okay"}
_S_WORDS = "what|it|that|there|who|how|where|here|he|she|let"
_CONTRACTIONS = (
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"\blet's\b"), "let us"),
    (re.compile(rf"\b({_S_WORDS})'s\b"), r"\1 is"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:st|nd|rd|th)?")


def number_words(n: int) -> str:
    """0 <= n < 10**12 in words, without "and": 124 -> "one hundred twenty four"."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    for scale, word in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_words(head)} {word}" + (" " + number_words(rest) if rest else "")
    raise AssertionError(n)  # unreachable


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = _ORDINAL.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return f"{head} {last}".strip()


def _spell_number(m: re.Match[str]) -> str:
    token = m.group(0)
    suffix = token[-2:] if token[-2:] in ("st", "nd", "rd", "th") else ""
    digits = token[: len(token) - len(suffix)]
    whole, _, frac = digits.partition(".")
    words = number_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    elif suffix:
        words = _ordinal(words)
    return f" {words} "


def normalise_words(text: str) -> list[str]:
    """``text`` as the list of words that WER and the answer check compare."""
    s = text.lower().replace("\u2019", "'").replace("%", " percent ").replace("&", " and ")
    for pattern, repl in _CONTRACTIONS:
        s = pattern.sub(repl, s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    # Signs between numbers are said: "10-3" is "ten minus three", "2+2" "two plus two".
    s = re.sub(r"(?<=\d)\s*-\s*(?=\d)", " minus ", s)
    s = re.sub(r"(?<=\d)\s*\+\s*(?=\d)", " plus ", s)
    s = re.sub(r"(?<=\d)\s*=\s*(?=\d)", " equals ", s)
    s = re.sub(r"(?<=\d)\.(?!\d)", " ", s)  # a full stop after a number is no decimal point
    s = _NUMBER.sub(_spell_number, s)
    s = s.replace("'", "")
    words = re.sub(r"[^a-z]+", " ", s).split()
    return [_BRITISH.get(w, w) for w in words]


def normalise(text: str) -> str:
    return " ".join(normalise_words(text))


# --- scores -------------------------------------------------------------------------------------


def word_edits(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance in words (substitution, deletion, insertion: 1 each)."""
    prev = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ref != hyp))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one transcript (edits / reference words), after normalisation."""
    ref = normalise_words(reference)
    return word_edits(ref, normalise_words(hypothesis)) / max(1, len(ref))


def key_words(question: str) -> list[str]:
    """The question's words that a transcript must keep to count as heard right."""
    return [w for w in normalise_words(question) if w not in STOPWORDS]


def heard_right(question: str, transcript: str) -> bool:
    heard = normalise_words(transcript)
    if not heard:
        return False
    if heard == normalise_words(question):
        return True
    have = set(heard)
    return all(w in have for w in key_words(question))


def _contains(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(words[i:i + n] == phrase for i in range(len(words) - n + 1))


def answered_right(question: Question, reply: str) -> bool:
    words = normalise_words(reply)
    return any(_contains(words, normalise_words(a)) for a in question.answers)
