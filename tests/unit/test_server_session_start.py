"""A session's start keeps the event loop free: the VAD's native session (~40 ms to build, more
beside busy models) is made in a thread, not on the loop that carries every other session's
audio (four sessions starting at once held the loop 209 ms in a bench run)."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from tests.helpers.fakes import FakeVAD, FakeVADFactory, fake_services
from voice_agent.core.config import V3Config
from voice_agent.server.app import create_app
from voice_agent.services.base import VAD


class WhereMade(FakeVADFactory):
    def __init__(self) -> None:
        self.on_loop: list[bool] = []

    def create(self) -> VAD:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return FakeVAD()


def test_the_session_vad_is_made_off_the_event_loop() -> None:
    app = create_app(V3Config())
    registry = app.state.registry
    services = fake_services()
    vads = WhereMade()
    services.vad = vads
    registry.services, registry.services_ready = services, True
    client = TestClient(app, base_url="http://localhost")  # no lifespan: nothing loads
    with client.websocket_connect("ws://localhost/ws/v3/audio?rate=16000") as ws:
        assert ws.receive_json()["type"] == "connection_established"
        ws.send_json({"type": "end"})
    assert vads.on_loop == [False]
