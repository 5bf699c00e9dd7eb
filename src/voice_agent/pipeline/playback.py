"""A reply's playback, from the sink's reports: when its first frame went out, and where its
audio ran dry while more of it was still being made (a silence the listener hears)."""

from __future__ import annotations

from .metrics import TurnMetrics
from .sink import Playback, PlaybackReport


class PlaybackWatch:
    def __init__(self, metrics: TurnMetrics) -> None:
        self.metrics = metrics
        self.done_writing = False
        """Set once the whole reply is in the sink: running dry after that is its end."""
        self._dry_since: float | None = None

    def report(self, report: PlaybackReport) -> None:
        if report.kind is Playback.STARTED:
            self.metrics.mark("first_audio_sent", report.at)
            if self._dry_since is not None:
                self.metrics.add_playback_gap((report.at - self._dry_since) * 1000)
                self._dry_since = None
        elif not self.done_writing:
            self._dry_since = report.at
