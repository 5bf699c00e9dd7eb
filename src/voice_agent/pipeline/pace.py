"""A reply ahead of its listener lets the replies that have no audio yet have the cores.

The local LLM writes every active reply in one batch (one llama.cpp slot each): on 2 cores four
replies at once ran at ~5 tokens/s each, so a reply whose listener was still waiting for its
first words got them only after the others had written whole sentences that would not be heard
for seconds (issue #15: 4 sessions at once, first audio after 6.5 s, one alone 1.1 s). A reply
with audio queued well ahead stops writing while another waits in silence, and goes on with
the same text (the model continues its own words: llama.cpp reads an assistant message last
in the prompt as the start of the reply) before its listener could hear a gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..core.activity import Activity

AHEAD_S = 2.0
"""Audio queued ahead of the listener from which a reply stops writing for others' sake."""
RESUME_S = 1.0
"""Audio left at which it writes again, others waiting or not: ~0.1 s to its next token once
the prompt is cached, a few words to a piece, then the TTS: well within a second."""
POLL_S = 0.05


class Pace:
    """One reply's courtesy towards the others on the same models."""

    def __init__(self, activity: Activity | None, session: str = "") -> None:
        self.activity = activity
        self.session = session
        """Replies of the same session never wait for each other ("" : no session known)."""
        self.yields = 0
        """Times this reply stopped writing for others."""
        self.audible: Callable[[], None] = lambda: None
        """Call when the reply's first audio is made (set inside :meth:`silent_until`)."""

    @contextmanager
    def silent_until(self) -> Iterator[Callable[[], None]]:
        """While the block runs and until the returned callable is called, this reply counts
        as having no audio yet."""
        if self.activity is None:
            yield lambda: None
            return
        activity = self.activity
        activity.reply_silent(self, True, self.session)
        try:
            yield lambda: activity.reply_silent(self, False)
        finally:
            activity.reply_silent(self, False)

    def should_yield(self, *, has_audio: bool, held: bool, queued_s: float) -> bool:
        """Stop writing now: others wait in silence, and this reply's listener does not need
        more soon (a held reply is not heard yet; a released one has ``queued_s`` ahead)."""
        if self.activity is None or not has_audio:
            return False
        if not self.activity.silent_replies(self, self.session):
            return False
        return held or queued_s >= AHEAD_S

    async def wait(self, queued_s: Callable[[], float], held: Callable[[], bool]) -> None:
        """Until nobody else waits in silence, or this reply's own audio runs low."""
        assert self.activity is not None
        self.yields += 1
        while self.activity.silent_replies(self, self.session) and (held() or queued_s() > RESUME_S):
            await asyncio.sleep(POLL_S)
