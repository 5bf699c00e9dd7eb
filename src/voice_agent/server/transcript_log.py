"""Every conversation on disk as it happens: one JSON-lines file per session.

``<transcripts_dir>/<session_id>.jsonl`` gets a record for the session start, the conversation
it resumed (if it did), each final user transcript, each tool call (name, arguments, result, ok,
latency), each agent reply (with what was actually spoken), each turn's metrics, errors and the
session end. Each record is one small synchronous append that is flushed at once, so a crash of
the server or a client that drops loses nothing already said; the file is fsynced (in a worker
thread, off the event loop) at the end of every turn and at the session end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..core.events import (ErrorEvent, MetricsEvent, PipelineEvent, ResponseEvent,
                           TranscriptEvent)
from ..tools.events import ToolCallEvent

log = logging.getLogger(__name__)

SESSION_ID = re.compile(r"[0-9a-f]{32}")
"""Session ids are uuid4 hex; anything else is refused before a path is built from it."""
MAX_ERROR_RECORDS = 200
"""Errors written per session; a client flooding bad messages must not flood the disk."""
MAX_READ_BYTES = 16 * 1024 * 1024
"""The transcript endpoint reads at most this much of a file."""

RecordMirror = Callable[[str, int, str], None]
"""Takes (session id, the record's line number in the file, the JSON line); must not block."""


def valid_session_id(session_id: str) -> bool:
    return SESSION_ID.fullmatch(session_id) is not None


def transcript_path(directory: Path, session_id: str) -> Path:
    if not valid_session_id(session_id):
        raise ValueError("invalid session id")
    return directory / f"{session_id}.jsonl"


class TranscriptLog:
    """Appends one session's records. Never raises: a full disk must not end a conversation."""

    def __init__(self, directory: Path, session_id: str) -> None:
        self.path = transcript_path(directory, session_id)
        self.session_id = session_id
        self._file: IO[str] | None = None
        self._errors = 0
        self._turns = 0
        self._ended = False
        self._finished = False
        self._records = 0
        self.mirror: RecordMirror | None = None
        """Called with each record after it is on disk (several workers: a copy in Redis)."""
        self._fsyncs: set[asyncio.Future[None]] = set()
        try:
            # Conversations are private: the folder and files are for this user only.
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as exc:
            log.error("session %s: cannot write the transcript %s: %r", session_id, self.path, exc)

    # -- records ------------------------------------------------------------------------------
    def start(self, *, transport: str, mode: str, **extra: Any) -> None:
        self._write({"type": "session_start", "session_id": self.session_id,
                     "transport": transport, "mode": mode, **extra})

    def event(self, event: PipelineEvent) -> None:
        """Record what matters of a pipeline event (finals only; statuses and interims are not
        kept, they are either repeated by a final or carry nothing said)."""
        if isinstance(event, TranscriptEvent) and event.final:
            self._write({"type": "transcript", "text": event.text})
        elif isinstance(event, ResponseEvent) and event.final:
            spoken = event.spoken_text if event.interrupted else event.text
            self._write({"type": "ai_response", "text": event.text,
                         "interrupted": event.interrupted, "spoken_text": spoken or ""})
        elif isinstance(event, MetricsEvent):
            self._turns += 1
            self._write({**event.metrics, "type": "metrics"})
            self._fsync_soon()
        elif isinstance(event, ErrorEvent):
            self.error(event.code, event.message, fatal=event.fatal)
        elif isinstance(event, ToolCallEvent):
            self._write({"type": "tool_call", "name": event.name, "arguments": event.arguments,
                         "result": event.result, "ok": event.ok,
                         "latency_ms": event.latency_ms})

    def resumed(self, history: list[dict[str, Any]]) -> None:
        """The conversation this session carries on (``resume``): its messages as the client
        was shown them, so that this session's transcript reads whole."""
        self._write({"type": "resumed", "messages": history})
        self._fsync_soon()

    def error(self, code: str, message: str, *, fatal: bool = False) -> None:
        self._errors += 1
        if self._errors <= MAX_ERROR_RECORDS or fatal:
            self._write({"type": "error", "code": code, "message": message, "fatal": fatal})

    def end(self, *, code: int, reason: str) -> None:
        """The last record; then the file is synced and closed."""
        if self._ended:
            return
        self._ended = True
        self._write({"type": "session_end", "code": code, "reason": reason,
                     "turns": self._turns, "errors": self._errors})
        self._finished = True
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.flush()
            os.fsync(file.fileno())  # once per session: a few ms at most
        except OSError as exc:
            log.error("session %s: syncing the transcript failed: %r", self.session_id, exc)
        finally:
            file.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _write(self, record: dict[str, Any]) -> None:
        if self._finished or (self._file is None and self.mirror is None):
            return
        line = json.dumps({"time": round(time.time(), 3), **record}, ensure_ascii=False,
                          default=str)
        if self._file is not None:
            try:
                self._file.write(line + "\n")
                self._file.flush()  # in the OS now: survives a crash of this process
            except OSError as exc:
                log.error("session %s: writing the transcript failed: %r", self.session_id, exc)
                self._file = None
        index, self._records = self._records, self._records + 1
        if self.mirror is not None:
            try:
                self.mirror(self.session_id, index, line)
            except Exception as exc:  # a copy must never cost the record or the session
                log.error("session %s: mirroring the transcript failed: %r", self.session_id,
                          exc)

    def _fsync_soon(self) -> None:
        """fsync in a worker thread: a slow disk must not stall the audio loop."""
        if self._file is None:
            return
        try:
            loop = asyncio.get_running_loop()
            fd = self._file.fileno()
        except (RuntimeError, ValueError, OSError):
            return
        future = loop.run_in_executor(None, _fsync_quietly, fd)
        self._fsyncs.add(future)
        future.add_done_callback(self._fsyncs.discard)


def _fsync_quietly(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:  # closed meanwhile: the session end syncs anyway
        pass


def read_transcript(directory: Path, session_id: str) -> list[dict[str, Any]] | None:
    """The records of one session, or None if there is no such transcript. A line cut short by
    a crash is skipped, not an error."""
    path = transcript_path(directory, session_id)
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_READ_BYTES)
    except FileNotFoundError:
        return None
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
