"""Watches a reply's playback: when its first frame went out, and where its audio ran dry."""

from __future__ import annotations

import asyncio
import time

from .metrics import TurnMetrics
from .sink import AudioSink

POLL_S = 0.01


async def watch_playback(sink: AudioSink, metrics: TurnMetrics, speaker: asyncio.Task[None]) -> None:
    """Mark the reply's first frame sent, then count the times its audio ran dry while
    ``speaker`` was still making the rest. Started when the reply is released: a track sends
    its first frame after play() returned, and a sink forgets a burst's start once its queue
    runs dry (a short first piece can finish before the next one is made)."""
    while (t := sink.playback_started_at) is None:
        if speaker.done() and sink.queued_s() == 0:
            return  # the reply made no audio
        await asyncio.sleep(POLL_S / 2)
    metrics.mark("first_audio_sent", t)
    dry_since: float | None = None
    queues = False  # a sink that plays at once (the CLI's buffer) never runs dry
    while True:
        done = speaker.done()
        now, queued = time.monotonic(), sink.queued_s() > 0
        if queued:
            queues = True
            if dry_since is not None:
                metrics.add_playback_gap((now - dry_since) * 1000)
                dry_since = None
        elif queues and dry_since is None and not done:
            dry_since = now
        if done:
            return
        await asyncio.sleep(POLL_S)
