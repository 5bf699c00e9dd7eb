"""Sessions: one conversation each, with its pipeline, transport and client connection.

The manager enforces the session limit, reaps idle and over-long sessions, and makes sure every
resource (peer connection, tracks, tasks, pipeline) is released however a session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from ..core.events import (ErrorEvent, PipelineEvent, StatusEvent, TranscriptEvent,
                           event_to_wire)
from ..core.status import ConnectionStatus, SessionInfo
from ..core.tasks import TaskSet
from ..transport import protocol
from .capacity import server_load
from .cluster_admission import current_admission
from .transcript_log import RecordMirror, TranscriptLog

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_IDLE = 4000
CLOSE_TOO_LONG = 4001
PART_CLOSE_TIMEOUT_S = 3.0
"""Closing the pipeline or the transport takes no longer than this; then it is left behind."""
CLOSER_TIMEOUT_S = 3.0
"""Closing a client's socket waits no longer than this (a client that stopped reading)."""


class ServerBusyError(Exception):
    """No room for another session (max_sessions reached): the client gets ``busy``."""

    code = protocol.ErrorCode.BUSY

    def __init__(self, capacity: int, active: int) -> None:
        super().__init__(f"server busy: {active} of {capacity} sessions already active")
        self.capacity = capacity
        self.active = active


class Transport(Protocol):
    async def close(self) -> None: ...

    async def stats(self) -> dict[str, Any]: ...


class Pipeline(Protocol):
    async def close(self) -> None: ...

    @property
    def in_turn(self) -> bool: ...


class ClusterHooks(Protocol):
    """The shared registry (cluster.py), as the manager sees it: told of every session that
    opens or closes, and the mirror each session's transcript copies its records to."""

    mirror: RecordMirror

    def session_opened(self, session: Session) -> None: ...

    def session_closed(self, session_id: str) -> None: ...


Sender = Callable[[dict[str, Any]], None]
Closer = Callable[[int, str], Awaitable[None]]


class Session:
    def __init__(self, info: SessionInfo) -> None:
        self.info = info
        self.pipeline: Pipeline | None = None
        self.transport: Transport | None = None
        self.senders: list[Sender] = []
        """Where server messages go: the WebSocket, and the data channel when there is one."""
        self.seq = 0
        """The ``seq`` of the last message sent to the client (see :meth:`_stamp`)."""
        self.closer: Closer | None = None
        """Closes the client connection (set by the route that accepted it)."""
        self._transcript: TranscriptLog | None = None
        self.mirror: RecordMirror | None = None
        """Where the transcript's records are copied (the shared registry's mirror, or none)."""
        self.closed = asyncio.Event()
        self._tasks = TaskSet(info.session_id)
        self._closing = False

    @property
    def id(self) -> str:
        return self.info.session_id

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def transcript(self) -> TranscriptLog | None:
        """The conversation on disk (set by the route that accepted it)."""
        return self._transcript

    @transcript.setter
    def transcript(self, log_: TranscriptLog | None) -> None:
        # Set before its first record: with several workers each record is also mirrored.
        if log_ is not None and self.mirror is not None:
            log_.mirror = self.mirror
        self._transcript = log_

    # -- output -------------------------------------------------------------------------------
    # Every JSON message to the client goes out through send() or reply(), so that it carries
    # the session's next ``seq``: 1, 2, 3, ... one counter per session, whatever the channel.
    def _stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        """The one place ``seq`` is assigned: a copy of ``message`` with the next number."""
        self.seq += 1
        return {**message, "seq": self.seq}

    def send(self, message: dict[str, Any]) -> None:
        """To every channel (mirrored): each copy carries the same ``seq``, so that a client
        reading both can drop the second."""
        stamped = self._stamp(message)
        for sender in list(self.senders):
            sender(stamped)

    def reply(self, sender: Sender, message: dict[str, Any]) -> None:
        """To one channel only (the one a client message came on, e.g. a ``pong``). It still
        takes the session's next ``seq``: no number is used twice, and a client reading the
        other channel sees a gap."""
        sender(self._stamp(message))

    def send_status(self) -> None:
        self.send(protocol.status(self.info.connection_status.value,
                                  self.info.processing_status.value))

    def send_error(self, code: str, message: str, *, fatal: bool = False,
                   reply: Sender | None = None) -> None:
        self.info.errors += 1
        log.warning("session %s: error %s: %s", self.id, code, message)
        if self.transcript is not None:
            self.transcript.error(code, message, fatal=fatal)
        msg = protocol.error(code, message, fatal=fatal)
        if reply is not None:
            self.reply(reply, msg)
        else:
            self.send(msg)

    def set_connection_status(self, status: ConnectionStatus) -> None:
        if status != self.info.connection_status:
            self.info.connection_status = status
            self.send_status()

    async def emit(self, event: PipelineEvent) -> None:
        """The pipeline's EventSink: keep SessionInfo current and forward to the client."""
        # The conversation is the activity the idle reaper looks for: events come from speech,
        # typed text and replies, never from pings, media packets or silence.
        self.info.touch()
        if self.transcript is not None:
            # Before the closing check: a reply cut short by the session closing is kept too.
            self.transcript.event(event)
        if self._closing:
            return
        if isinstance(event, StatusEvent):
            if event.processing_status != self.info.processing_status:
                self.info.processing_status = event.processing_status
                self.send_status()
            return
        if isinstance(event, TranscriptEvent) and event.final:
            self.info.messages_processed += 1
        if isinstance(event, ErrorEvent):
            self.info.errors += 1
            log.warning("session %s: pipeline error %s: %s", self.id, event.code, event.message)
        self.send(event_to_wire(event))

    async def _release(self) -> None:
        # Each bounded: a task that ignores its cancel is logged and left, the slot is freed.
        await self._tasks.stop()
        for name, part in (("pipeline", self.pipeline), ("transport", self.transport)):
            if part is None:
                continue
            try:
                async with asyncio.timeout(PART_CLOSE_TIMEOUT_S):
                    await part.close()
            except Exception as exc:  # keep releasing the rest (TimeoutError included)
                log.error("session %s: closing the %s failed: %r", self.id, name, exc)

    # -- tasks and shutdown -------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """A task owned by the session: cancelled when it closes."""
        return self._tasks.spawn(coro, name)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Release everything. Idempotent; safe to call from any task but the session's own."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        log.info("session %s: closing (%s)", self.id, reason or code)
        try:
            await self._release()
        finally:  # even if the close itself is cancelled, the transcript gets its last record
            self.info.connection_status = ConnectionStatus.DISCONNECTED
            if self.transcript is not None:
                self.transcript.end(code=code, reason=reason)
        if self.closer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSER_TIMEOUT_S):
                    await self.closer(code, reason)
        self.senders.clear()
        self.pipeline = None
        self.transport = None
        self.closed.set()


class SessionManager:
    def __init__(self, max_sessions: int, idle_timeout_s: float, max_session_s: float,
                 reap_interval_s: float | None = None,
                 after_close: Callable[[], object] | None = None,
                 worker: str | None = None) -> None:
        self.max_sessions = max_sessions
        self.worker = worker
        """This worker's id (server.worker_id), in every SessionInfo it makes."""
        self.cluster: ClusterHooks | None = None
        """The shared registry when there is one (set by cluster.py at start)."""
        self.after_close = after_close
        """Blocking clean-up run in a worker thread once a session is gone (memory release)."""
        self.idle_timeout_s = idle_timeout_s
        self.max_session_s = max_session_s
        self.reap_interval_s = reap_interval_s or max(0.05, min(1.0, idle_timeout_s / 4))
        self._sessions: dict[str, Session] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, transport: str = "webrtc") -> Session:
        """A new session, or ServerBusyError: this worker is full, or (with several workers)
        the shared registry refused the slot (cluster_admission.py reserved it, or not,
        before this socket's route ran)."""
        if len(self._sessions) >= self.max_sessions:
            raise ServerBusyError(self.max_sessions, len(self._sessions))
        admission = current_admission()
        if admission is not None and not admission.taken and not admission.admitted:
            raise ServerBusyError(admission.capacity, admission.active)
        info = SessionInfo(transport=transport, connection_status=ConnectionStatus.CONNECTED,
                           worker=self.worker)
        if admission is not None and not admission.taken:
            admission.taken = True
            info.session_id = admission.session_id  # the slot was reserved under this id
        session = Session(info)
        self._sessions[session.id] = session
        if self.cluster is not None:
            session.mirror = self.cluster.mirror
            self.cluster.session_opened(session)
        log.info("session %s: created (%s, %d active)", session.id, transport, len(self._sessions))
        return session

    @property
    def load(self) -> float:
        """0..1: open sessions over the capacity (see capacity.py)."""
        return server_load(len(self._sessions), self.max_sessions)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def list(self) -> list[Session]:
        return list(self._sessions.values())

    async def close(self, session_id: str, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        try:
            await session.close(code, reason)
        finally:
            if self._sessions.pop(session_id, None) is not None and self.cluster is not None:
                self.cluster.session_closed(session_id)
        if self.after_close is not None:
            try:
                await asyncio.to_thread(self.after_close)
            except Exception as exc:  # a failed clean-up must not fail the close
                log.warning("after closing session %s: %r", session_id, exc)

    def request_close(self, session_id: str, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close from inside one of the session's own tasks (which close() cancels)."""
        task = asyncio.get_running_loop().create_task(self.close(session_id, code, reason))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutdown") -> None:
        await asyncio.gather(*(self.close(s, code, reason) for s in list(self._sessions)),
                             return_exceptions=True)
        if self._closers:
            await asyncio.gather(*list(self._closers), return_exceptions=True)

    # -- reaper -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever(),
                                                                  name="session-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        await self.close_all()

    async def reap_once(self) -> list[str]:
        """Close sessions idle or open too long; return their ids."""
        now = time.monotonic()
        reaped = []
        for session in list(self._sessions.values()):
            if session.closing:
                continue
            if session.pipeline is not None and session.pipeline.in_turn:
                session.info.touch()  # a long utterance or reply is not idleness
            if now - session.info.last_activity > self.idle_timeout_s:
                code, reason = CLOSE_IDLE, (f"no speech and no typed message for "
                                            f"{self.idle_timeout_s:g} s")
            elif session.info.duration_s > self.max_session_s:
                code, reason = CLOSE_TOO_LONG, f"session longer than {self.max_session_s:g} s"
            else:
                continue
            session.send_error(protocol.ErrorCode.SESSION_TIMEOUT, reason, fatal=True)
            reaped.append(session.id)
            self.request_close(session.id, code, reason)
        return reaped

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval_s)
            try:
                await self.reap_once()
            except Exception:  # the reaper must survive any one bad session
                log.exception("session reaper failed")
