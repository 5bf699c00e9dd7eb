"""Which sessions are in a turn right now: the models are shared, so the work one session may
spend on comfort (interims, prefills, early replies) depends on the others.

Measured (issue #15): with four people talking at once on 2 cores, a turn cost 33 CPU-seconds
against ~10 for one alone; interims, prefills and replies started early and dropped all fight
the answers people wait for. A session that sees others in a turn at the same time keeps to
what a reply needs (pipeline/agent.py reads :meth:`Activity.others`).
"""

from __future__ import annotations

import time

STALE_S = 20.0
"""A reply without audio for this long is not someone waiting (the turn fails at ~10-30 s)."""


class Activity:
    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._silent: dict[object, tuple[str, float]] = {}
        """Replies started whose first audio is not made yet (someone waits in silence), with
        their session and since when."""

    def set_busy(self, session: str, busy: bool) -> None:
        """``session`` is in a turn (the user speaks, or the agent thinks or speaks) or not."""
        if busy:
            self._busy.add(session)
        else:
            self._busy.discard(session)

    @property
    def busy(self) -> int:
        return len(self._busy)

    def others(self, session: str) -> int:
        """Sessions other than ``session`` in a turn now."""
        return len(self._busy - {session})

    def reply_silent(self, reply: object, silent: bool, session: str = "") -> None:
        """``reply`` (of ``session``) has no audio yet (its listener waits in silence), or has
        some now."""
        if silent:
            self._silent[reply] = (session, time.monotonic())
        else:
            self._silent.pop(reply, None)

    def silent_replies(self, but: object = None, session: str = "") -> int:
        """Replies other than ``but`` that have no audio yet, of sessions other than
        ``session`` when it is given (a session hears one reply at a time: its own other
        replies are held or cut, nobody waits for them). One silent for over ``STALE_S`` is
        not counted: a reply abandoned after a cut that would not stop must not hold others
        back for ever."""
        now = time.monotonic()
        return sum(1 for reply, (their, since) in self._silent.items()
                   if reply is not but and not (session and their == session)
                   and now - since < STALE_S)
