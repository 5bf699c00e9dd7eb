"""The outbox: a client whose socket takes nothing any more is reported, not waited on."""

from __future__ import annotations

import asyncio

from voice_agent.server.outbox import Outbox


class StuckSocket:
    """A WebSocket whose client stopped reading: the first send never completes."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        if self.sent:
            await asyncio.Event().wait()
        self.sent.append(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.send_text(repr(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)


async def test_a_send_that_stalls_reports_the_client_gone() -> None:
    ws, stalled = StuckSocket(), asyncio.Event()
    box = Outbox(ws, "s1", on_stalled=stalled.set, stall_s=0.2)  # type: ignore[arg-type]
    box.send({"type": "a"})
    box.send(b"\x00\x00")
    async with asyncio.timeout(2):
        await stalled.wait()
    assert box.closed and len(ws.sent) == 1
    box.send({"type": "b"})  # dropped quietly from now on
    async with asyncio.timeout(2):
        await box.close(4000, "the client stopped reading")
    assert ws.closed_with == (4000, "the client stopped reading")


async def test_a_reading_client_is_never_reported() -> None:
    class Reading(StuckSocket):
        async def send_text(self, text: str) -> None:
            await asyncio.sleep(0.05)  # slow, but it takes every message
            self.sent.append(text)

    ws, stalled = Reading(), asyncio.Event()
    box = Outbox(ws, "s2", on_stalled=stalled.set, stall_s=1.0)  # type: ignore[arg-type]
    for i in range(8):
        box.send({"n": i})
    await asyncio.sleep(0.6)
    assert len(ws.sent) == 8 and not stalled.is_set()
    await box.close()
