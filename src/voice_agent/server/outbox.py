"""Everything sent to one WebSocket goes through a single writer task.

Why: the pipeline, the transport and the message handler all send; one writer keeps the order,
avoids concurrent sends on the socket, and a slow client never blocks the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket

log = logging.getLogger(__name__)

MAX_PENDING = 2000
"""Messages waiting for a client that does not read; beyond this the client is dropped."""
SEND_STALL_S = 5.0
"""A send that the client's socket has not taken for this long means the client stopped reading
(its TCP window stays shut): it is gone for good, and the session is closed (``on_stalled``)
instead of speaking to nobody until its reply ends."""


class Outbox:
    def __init__(self, ws: WebSocket, session_id: str, max_pending: int = MAX_PENDING, *,
                 on_stalled: Callable[[], None] | None = None,
                 stall_s: float = SEND_STALL_S) -> None:
        self._ws = ws
        self._on_stalled = on_stalled
        self._stall_s = stall_s
        self._session_id = session_id
        self._queue: asyncio.Queue[dict[str, Any] | bytes | None] = asyncio.Queue()
        self._max_pending = max_pending
        self._closed = False
        self.overflowed = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, message: dict[str, Any] | bytes) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self._max_pending:
            if not self.overflowed:
                log.warning("session %s: client is not reading; dropping messages", self._session_id)
            self.overflowed = True
            return
        self._queue.put_nowait(message)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                async with asyncio.timeout(self._stall_s):
                    if isinstance(item, bytes):
                        await self._ws.send_bytes(item)
                    else:
                        await self._ws.send_text(json.dumps(item))
            except TimeoutError:
                log.warning("session %s: the client took nothing for %g s: it stopped reading",
                            self._session_id, self._stall_s)
                self._closed = True
                if self._on_stalled is not None:
                    self._on_stalled()
                return
            except Exception as exc:  # the socket went away; the receive loop will notice
                log.debug("session %s: send failed: %r", self._session_id, exc)
                self._closed = True
                return

    async def close(self, code: int = 1000, reason: str = "", flush_timeout_s: float = 1.0) -> None:
        """Send what is queued (briefly), then close the socket. Idempotent."""
        if not self._task.done():
            self._queue.put_nowait(None)
            try:
                async with asyncio.timeout(flush_timeout_s):
                    await asyncio.shield(self._task)
            except (TimeoutError, Exception):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        self._closed = True
        with contextlib.suppress(Exception):
            await self._ws.close(code=code, reason=reason[:120])
