"""ChatML by hand, for llama.cpp's raw completions: the prompt prefix a prefill or an end-of-turn
score reads (the same tokens the model's chat template renders, so they stay cached for the
reply), and the probability that the user's sentence ends, read from one token's
``top_logprobs`` (docs/end_of_turn.md)."""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voice_agent.core.messages import ChatMessage

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger(__name__)

_CHATML_END = "<|im_end|>\n"


def chatml_prefix(messages: list[ChatMessage]) -> str:
    """``messages`` in ChatML, the last one left open (no end marker, no assistant header).
    Plain messages only (see :func:`_plain`): tool calls and results are the template's to
    render, in its own way."""
    text = "".join(f"<|im_start|>{m.role}\n{m.content}{_CHATML_END}" for m in messages)
    return text[: -len(_CHATML_END)] if messages else text


def _plain(messages: list[ChatMessage]) -> bool:
    """True when no message carries tool calls or answers one (nor names a participant), so
    that role and content are all a template renders of them."""
    return all(not m.tool_calls and m.tool_call_id is None and m.name is None for m in messages)


def words_to_score(messages: list[ChatMessage], *,
                   keep_punctuation: bool = False) -> list[ChatMessage] | None:
    """The messages an end-of-turn score reads: up to the last user message, whose trailing
    punctuation is dropped unless ``keep_punctuation`` (the providers' ``end_of_turn_probability``
    says why). None when there is nothing to score: tool calls among them (the template renders
    those its own way) or no words left. ValueError without a user message."""
    if not _plain(messages):
        return None
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise ValueError("end_of_turn_probability needs a user message")
    last = messages[last_user]
    words = last.content if keep_punctuation else last.content.rstrip(_TRAILING_PUNCTUATION)
    if not words.strip():
        return None
    return [*messages[:last_user], ChatMessage(last.role, words)]


IM_END_QWEN = 151645
"""``<|im_end|>`` in the Qwen2/2.5 vocabulary: the id used when llama.cpp cannot be asked."""


def _token_id(server: xllamacpp.Server, text: str, key: str = "") -> int | None:
    """The id of ``text`` if the model reads it as one token (special tokens parsed), asked
    of the in-process server's own /tokenize on loopback (xllamacpp has no Python call for
    it); None if it cannot say."""
    try:
        request = urllib.request.Request(
            f"{server.listening_address}/tokenize",
            data=json.dumps({"content": text, "add_special": False,
                             "parse_special": True}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (loopback)
            tokens = json.loads(response.read()).get("tokens") or []
    except Exception as exc:
        log.debug("cannot tokenize %r: %r", text, exc)
        return None
    return single_token(tokens)


def single_token(tokens: object) -> int | None:
    """The id in a /tokenize answer's ``tokens`` (ids, or ``{id, piece}`` objects) when it
    holds exactly one token; else None."""
    if not isinstance(tokens, list) or len(tokens) != 1:
        return None
    token = tokens[0]
    try:
        return int(token["id"] if isinstance(token, dict) else token)
    except (KeyError, TypeError, ValueError):
        return None


_SENTENCE_END = re.compile(r"[.?!]{1,2}[\s\"')\]]*")
"""A token that ends a sentence: ``?``, ``.``, ``!``, ``?!`` and the like, maybe with a newline
or closing quote; not ``...`` (trailing off) and not ``,``."""
_TRAILING_PUNCTUATION = ".?!…。？！ \t\n"


def _top(response: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The one generated token's ``top_logprobs`` of a raw completion: the OpenAI-style answer
    of the in-process ``handle_completions`` (``choices[0].logprobs.content``), or that of
    llama.cpp's native HTTP ``/completion`` (``completion_probabilities``; older servers:
    ``probs`` of ``{tok_str, prob}``), each entry with its ``token``."""
    if "completion_probabilities" in response:
        content = response.get("completion_probabilities") or [{}]
    else:
        choices = response.get("choices") or [{}]
        content = (choices[0].get("logprobs") or {}).get("content") or [{}]
    return [e if "token" in e or "tok_str" not in e else {**e, "token": e["tok_str"]}
            for e in (content[0].get("top_logprobs") or content[0].get("top_probs")
                      or content[0].get("probs") or [])]


def _prob(entry: Mapping[str, Any]) -> float:
    if "logprob" in entry:
        return math.exp(float(entry["logprob"]))
    return float(entry.get("prob", 0.0))


def _end_probability(response: Mapping[str, Any], end_id: int, *,
                     punctuation_ends: bool) -> float:
    """The probability of token ``end_id`` (and, if ``punctuation_ends``, of the tokens that
    end a sentence) among a raw completion's ``top_logprobs`` for its one generated token;
    0.0 for any not among them. llama.cpp renders special tokens as empty text,
    ``<|im_start|>`` as well as ``<|im_end|>``: the id tells them apart; without ids, the
    text ``<|im_end|>``, else the most likely empty one."""
    top = _top(response)
    total = 0.0
    if punctuation_ends:
        total = sum(_prob(e) for e in top if _SENTENCE_END.fullmatch(str(e.get("token", ""))))
    if any("id" in entry for entry in top):
        return min(1.0, total + next((_prob(e) for e in top if e.get("id") == end_id), 0.0))
    for text in ("<|im_end|>", ""):
        found = next((_prob(e) for e in top if e.get("token") == text), None)
        if found is not None:
            return min(1.0, total + found)
    return total


def statement_share(response: Mapping[str, Any], probability: float,
                    check_at: float | None) -> float:
    """The part of ``probability`` (the score read from ``response``) that is a full stop,
    when the turn's end hangs on it: the words score ``check_at`` or more only with it (a
    statement, not a question). Then whether the user's message ends after that sentence
    is asked too (see :func:`after_statement`); 0.0 when it need not be."""
    if check_at is None or probability < check_at:
        return 0.0
    period = sum(_prob(e) for e in _top(response) if str(e.get("token", "")).strip() == ".")
    return period if probability - period < check_at else 0.0


def as_statement(scored: list[ChatMessage]) -> list[ChatMessage]:
    """``scored`` (see :func:`words_to_score`) with a full stop after the user's words: the
    prompt that asks whether the message ends after that sentence (``<|im_end|>`` next)."""
    last = scored[-1]
    return [*scored[:-1], ChatMessage(last.role, f"{last.content}.")]


def message_end_probability(response: Mapping[str, Any], end_id: int) -> float:
    """From the one-token answer to :func:`as_statement`'s prompt: the probability that the
    user's message ends after the sentence, i.e. ``<|im_end|>`` next, or the " (" that opens
    the other hearings the history writes after a message's words ("... (or: ...)",
    conversation.with_hearings): once earlier messages carry them the model expects one
    (" (" 0.57-0.60 after "Name a primary color." two turns in, ``<|im_end|>`` 0.38-0.42)."""
    bracket = sum(_prob(e) for e in _top(response) if str(e.get("token", "")).strip() == "(")
    return min(1.0, bracket + _end_probability(response, end_id, punctuation_ends=False))


def after_statement(probability: float, period: float, ends_after: float) -> float:
    """The score with its full stop weighed by the probability that the message ends after
    the sentence. A statement before the question ("My sister is learning to play the
    piano." then "How many keys...") scored 0.61, whole, and its message ends there with
    0.49, so 0.30: not a whole turn. Measured on 9 such lead-ins and 66 whole questions and
    requests (docs/end_of_turn.md): the message ended after a lead-in with 0.21-0.52 (one
    0.83), after a request ("Name a primary color.") with 0.89-0.99."""
    return probability - period + period * ends_after
