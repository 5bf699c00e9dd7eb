"""Which sessions are in a turn right now: the models are shared, so the work one session may
spend on comfort (interims, prefills, early replies) depends on the others.

Measured (issue #15): with four people talking at once on 2 cores, a turn cost 33 CPU-seconds
against ~10 for one alone; interims, prefills and replies started early and dropped all fight
the answers people wait for. A session that sees others in a turn at the same time keeps to
what a reply needs (pipeline/agent.py reads :meth:`Activity.others`).
"""

from __future__ import annotations


class Activity:
    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._silent: set[object] = set()
        """Replies started whose first audio is not made yet: someone waits in silence."""

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

    def reply_silent(self, reply: object, silent: bool) -> None:
        """``reply`` has no audio yet (its listener waits in silence), or has some now."""
        if silent:
            self._silent.add(reply)
        else:
            self._silent.discard(reply)

    def silent_replies(self, but: object = None) -> int:
        """Replies that have no audio yet, other than ``but``."""
        return len(self._silent - {but})
