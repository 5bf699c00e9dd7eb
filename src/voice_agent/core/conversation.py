"""Bounded conversation history and the LLM context built from it.

Interrupted replies: when the user barges in, the history keeps only the part of the reply the
user actually heard (``spoken_text``), flagged ``interrupted``. If the user heard nothing, the
reply is dropped altogether. Of a reply heard in part, the LLM's context holds the whole reply
it wrote: with the heard part cut mid-sentence in
its context the 1.5B model imitated it, and after three barge-ins its stories were 5-12 words
long, stopping mid-sentence (the whole replies: 69-76 words; docs/latency.md). The
context then merges consecutive messages of the same role, so chat templates that require
user/assistant alternation still get it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .messages import ChatMessage

USER = "user"
ASSISTANT = "assistant"
SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class _Record:
    role: str
    text: str
    timestamp: float
    interrupted: bool = False
    written: str = ""
    """The whole reply the model wrote, for its context (an interrupted one's ``text`` is the
    part heard); empty: ``text``."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "text": self.text,
            "timestamp": self.timestamp,
            "interrupted": self.interrupted,
        }


def with_hearings(text: str, heard_as: tuple[str, ...] = ()) -> str:
    """The user's words as the LLM reads them: the transcript, then the speech recognizer's
    other hearings of it, if any ("What do these make? (or: What do bees make?)"). The
    default system prompt says what the brackets mean."""
    text = text.strip()
    others = [h.strip() for h in heard_as if h.strip()]
    return f"{text} (or: {' / '.join(others)})" if text and others else text


class ConversationManager:
    """One session's dialogue. Pure in-memory state, no I/O; not shared between sessions."""

    def __init__(
        self,
        system_prompt: str,
        max_messages: int = 20,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self._system_prompt = system_prompt
        self._max_messages = max_messages
        self._clock = clock
        # The deque drops the oldest message itself, so memory stays bounded in long sessions.
        self._records: deque[_Record] = deque(maxlen=max_messages)
        self._messages_processed = 0

    @property
    def system_prompt(self) -> str:
        return self._system_prompt

    @property
    def max_messages(self) -> int:
        return self._max_messages

    @property
    def messages_processed(self) -> int:
        """Messages recorded since the session began (user and agent); not reset by clear()."""
        return self._messages_processed

    @property
    def history(self) -> list[dict[str, Any]]:
        """The kept messages, oldest first, as fresh dicts (role, text, timestamp, interrupted)."""
        return [r.as_dict() for r in self._records]

    def __len__(self) -> int:
        return len(self._records)

    def __bool__(self) -> bool:
        """Always true: an empty conversation is still one (``__len__`` alone made it false,
        and ``conversation or ConversationManager(...)`` dropped a given empty one)."""
        return True

    def add_user(self, text: str, *, heard_as: tuple[str, ...] = ()) -> bool:
        """Record what the user said. Blank text is ignored; returns whether it was recorded.
        ``heard_as``: the STT's other hearings of it, kept for the LLM's context only (the
        history shows ``text``)."""
        return self._add(USER, text, interrupted=False, written=with_hearings(text, heard_as))

    def add_assistant(
        self, text: str, *, interrupted: bool = False, spoken_text: str | None = None
    ) -> bool:
        """Record the agent's reply; returns whether anything was recorded.

        With ``interrupted=True`` only ``spoken_text`` (what was played before the barge-in) is
        kept; when it is empty or None the reply is not recorded at all.
        """
        if interrupted:
            return self._add(ASSISTANT, spoken_text or "", interrupted=True, written=text)
        return self._add(ASSISTANT, text, interrupted=False)

    def _add(self, role: str, text: str, *, interrupted: bool, written: str = "") -> bool:
        text = text.strip()
        if not text:
            return False
        self._records.append(_Record(role, text, self._clock(), interrupted, written.strip()))
        self._messages_processed += 1
        return True

    def context(self, pending_user_text: str | None = None, *,
                heard_as: tuple[str, ...] = ()) -> list[ChatMessage]:
        """System prompt, then the kept messages, never starting with an assistant message.

        A leading assistant message would be a reply to a question that fell out of the window;
        models answer it oddly, so it is left out. ``pending_user_text`` is the turn being
        answered but not yet recorded; it is appended (merged into a trailing user message),
        with ``heard_as``, its other hearings (:func:`with_hearings`).
        """
        messages: list[ChatMessage] = [ChatMessage(SYSTEM, self._system_prompt)]
        turns = [(r.role, r.written or r.text) for r in self._records]
        if pending_user_text and pending_user_text.strip():
            turns.append((USER, with_hearings(pending_user_text, heard_as)))
        while turns and turns[0][0] == ASSISTANT:
            turns.pop(0)
        for role, text in turns:
            last = messages[-1]
            if len(messages) > 1 and last.role == role:
                # e.g. two user turns around a reply nobody heard: keep roles alternating.
                messages[-1] = ChatMessage(role, f"{last.content}\n{text}")
            else:
                messages.append(ChatMessage(role, text))
        return messages

    def export(self) -> list[dict[str, Any]]:
        """The kept messages as plain data, to carry the conversation to another session
        (server/resume.py): :attr:`history`'s fields, plus ``written`` (the whole reply the
        model wrote) for a reply the user cut, whose ``text`` is only the part heard."""
        out = []
        for r in self._records:
            item = r.as_dict()
            if r.written and r.written != r.text:
                item["written"] = r.written
            out.append(item)
        return out

    def restore(self, records: list[dict[str, Any]]) -> int:
        """Append messages from :meth:`export` (another session's conversation), oldest first;
        the window (``max_messages``) keeps the newest. A record whose role is not user or
        assistant, or whose text is blank, is skipped. Restored messages do not count in
        :attr:`messages_processed` (they were processed elsewhere). Returns how many were kept."""
        kept = 0
        for item in records:
            role, text = item.get("role"), item.get("text")
            if role not in (USER, ASSISTANT) or not isinstance(text, str) or not text.strip():
                continue
            written = item.get("written")
            timestamp = item.get("timestamp")
            self._records.append(_Record(
                role, text.strip(),
                float(timestamp) if isinstance(timestamp, (int, float)) else self._clock(),
                item.get("interrupted") is True,
                written.strip() if isinstance(written, str) else ""))
            kept += 1
        return min(kept, len(self._records))

    def clear(self) -> None:
        """Forget the dialogue (the system prompt and the processed counter stay)."""
        self._records.clear()
