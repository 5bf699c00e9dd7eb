"""Transcripts readable from any worker: each record a worker writes to disk, mirrored in Redis.

The disk stays the source of truth (transcript_log.py: one synchronous, flushed append per
record, whatever Redis does). The mirror only copies: ``TranscriptLog`` hands each line to
:class:`TranscriptMirror` (a queue append, nothing more on the event loop), and one task
pushes the queue to ``va:transcript:<session>`` (a list, the newest :data:`MAX_RECORDS`
records, kept :data:`TRANSCRIPT_TTL_S` after its last record). GET
/v3/sessions/{id}/transcript reads the file when this worker has it, else this list.

Redis down: nothing is queued for it; the sessions whose records missed it are marked, and
once Redis is back each marked session's list is written again from its file on disk (read
in a worker thread), as are the lists of every session still open (a restarted Redis may have
lost them). A record is numbered by its line in the file, so one already in the copy from disk
is not pushed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.tasks import stop_within
from .redis_link import RedisUnavailable

if TYPE_CHECKING:
    from .cluster import ClusterRegistry

log = logging.getLogger(__name__)

# Unchanged key name: during a rolling upgrade every worker must keep finding the others' lists.
TRANSCRIPT_PREFIX = "va:transcript:"
TRANSCRIPT_TTL_S = 24 * 3600
"""An ended conversation stays readable from other workers this long (its file stays)."""
MAX_RECORDS = 10_000
"""Newest records kept per session in Redis (an hour-long session writes a few hundred)."""
MAX_QUEUED = 20_000
"""Records waiting for Redis; beyond it a record's session is copied again from its file."""
MAX_MARKED = 10_000
BATCH = 500
FLUSH_EVERY_S = 1.0
MAX_READ_BYTES = 16 * 1024 * 1024
STOP_FLUSH_S = 2.0


def transcript_key(session_id: str) -> str:
    return TRANSCRIPT_PREFIX + session_id


class TranscriptMirror:
    """``TranscriptLog.mirror``: called with (session id, line number, JSON line)."""

    def __init__(self, cluster: ClusterRegistry, directory: Path) -> None:
        self.cluster = cluster
        self.directory = directory
        self._queue: deque[tuple[str, int, str]] = deque()
        self._marked: set[str] = set()
        """Sessions whose list must be written again from their file."""
        self._copied: dict[str, int] = {}
        """Lines of a session's file already in its list (their records are not pushed)."""
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._was_down = False
        self._overflowed = False

    def __call__(self, session_id: str, index: int, line: str) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._mark(session_id)
            return
        self._queue.append((session_id, index, line))
        self._ready.set()

    def outage(self) -> None:
        """Redis was lost (redis_link.py, through cluster.py): once it is back, the open
        sessions' lists are written again from their files (a restarted Redis may have lost
        them)."""
        self._was_down = True

    def wake(self) -> None:
        """Flush now (Redis is back: the copies from disk should not wait for a record)."""
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever(),
                                                            name="transcript-mirror")

    async def stop(self) -> None:
        """One last flush (the sessions' last records), bounded; then the task ends."""
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self.flush()
        if self._task is not None:
            await stop_within(self._task, "transcript mirror")
            self._task = None

    async def _flush_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_EVERY_S):
                    await self._ready.wait()
            self._ready.clear()
            try:
                await self.flush()
            except Exception:  # the mirror must outlive any one bad record
                log.exception("transcript mirror: flush failed")

    async def flush(self) -> None:
        if self.cluster.state != "ok":
            # The records are on disk: copied from there once Redis is back.
            while self._queue:
                self._mark(self._queue.popleft()[0])
            return
        if self._was_down:  # a restarted Redis may have lost the open sessions' lists
            self._was_down = False
            for session in (self.cluster.sessions.list() if self.cluster.sessions else []):
                self._mark(session.id)
        for session_id in list(self._marked):
            if not await self._copy_file(session_id):
                return
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            if not await self._push(batch):
                return
        # Every record numbered below a copy's line count was queued before the copy was
        # read, so none is left now.
        self._copied.clear()

    async def _push(self, batch: list[tuple[str, int, str]]) -> bool:
        groups: dict[str, list[str]] = {}
        for session_id, index, line in batch:
            if session_id in self._marked or index < self._copied.get(session_id, 0):
                continue  # written whole from its file / already in that copy
            groups.setdefault(session_id, []).append(line)
        if not groups:
            return True
        try:
            async with self.cluster.redis.pipeline(transaction=False) as pipe:
                for session_id, lines in groups.items():
                    key = transcript_key(session_id)
                    pipe.rpush(key, *lines)
                    pipe.ltrim(key, -MAX_RECORDS, -1)
                    pipe.expire(key, TRANSCRIPT_TTL_S)
                await self.cluster.link.call(pipe.execute())
        except RedisUnavailable:
            for session_id in groups:
                self._mark(session_id)
            return False
        return True

    async def _copy_file(self, session_id: str) -> bool:
        lines = await asyncio.to_thread(_complete_lines, self.directory / f"{session_id}.jsonl")
        if lines is None:  # no file (it could not be written): nothing better to copy
            self._marked.discard(session_id)
            return True
        key = transcript_key(session_id)
        try:
            async with self.cluster.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if lines:
                    pipe.rpush(key, *lines[-MAX_RECORDS:])
                    pipe.expire(key, TRANSCRIPT_TTL_S)
                await self.cluster.link.call(pipe.execute())
        except RedisUnavailable:
            return False
        self._marked.discard(session_id)
        self._copied[session_id] = len(lines)
        return True

    def _mark(self, session_id: str) -> None:
        if len(self._marked) < MAX_MARKED:
            self._marked.add(session_id)
        elif session_id not in self._marked and not self._overflowed:
            self._overflowed = True
            log.warning("transcript mirror: over %d sessions missed Redis; the others stay "
                        "readable on their own worker only", MAX_MARKED)


def _complete_lines(path: Path) -> list[str] | None:
    """The file's whole lines (a line being appended right now is left for the queue)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_READ_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("transcript mirror: cannot read %s: %r", path, exc)
        return None
    return text.split("\n")[:-1]  # the piece after the last newline is not a whole line
