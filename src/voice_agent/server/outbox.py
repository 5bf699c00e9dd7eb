"""Everything sent to one WebSocket goes through a single writer task.

Why: the pipeline, the transport and the message handler all send; one writer keeps the order,
avoids concurrent sends on the socket, and a slow client never blocks the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import WebSocket

log = logging.getLogger(__name__)

MAX_PENDING = 2000
"""Messages waiting for a client that does not read; beyond this the client is dropped."""


class Outbox:
    def __init__(self, ws: WebSocket, session_id: str, max_pending: int = MAX_PENDING) -> None:
        self._ws = ws
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
                if isinstance(item, bytes):
                    await self._ws.send_bytes(item)
                else:
                    await self._ws.send_text(json.dumps(item))
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
