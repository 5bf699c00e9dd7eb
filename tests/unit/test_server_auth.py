"""The token and origin checks as the routers' dependencies, on an app without models.

TestClient without ``with`` runs no lifespan: nothing is loaded, so a socket that gets past the
checks is told the models are still loading (close 1013), which is how these tests see that it
got past them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from voice_agent.core.config import V3Config
from voice_agent.core.status import ErrorType
from voice_agent.server.app import create_app
from voice_agent.server.auth import protected_router, require_allowed_origin, require_token

TOKEN = "s3cret-token"
WS = "ws://localhost"
"""TestClient's WebSockets default to ``Host: testserver``, which the host check refuses."""
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PUBLIC = {"/", "/v3/health", "/v3/metrics", "/{filename}"}
"""The only routes anyone may call (docs/protocol.md); every other one needs the token."""


@pytest.fixture
def client() -> Iterator[TestClient]:
    yield TestClient(create_app(V3Config(auth_token=TOKEN)), base_url="http://localhost")


def _checks(route: APIRoute | APIWebSocketRoute) -> list[object]:
    return [dep.call for dep in route.dependant.dependencies]


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute | APIWebSocketRoute]:
    """Every FastAPI route, inside included routers too (FastAPI 0.165 keeps an included
    router as one entry, ``original_router``, instead of copying its routes)."""
    for route in routes:
        if (inner := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(inner.routes)
        elif isinstance(route, (APIRoute, APIWebSocketRoute)):
            yield route


def test_every_route_but_the_public_ones_needs_the_token() -> None:
    routes = list(_api_routes(create_app(V3Config()).routes))
    protected = {r.path for r in routes if require_token in _checks(r)}
    assert {r.path for r in routes} - protected == PUBLIC
    assert {"/v3/sessions", "/v3/config", "/ws/v3", "/ws/v3/audio"} <= protected
    # WebSockets: the origin first, so a foreign page is not even told a token is needed.
    for route in routes:
        if isinstance(route, APIWebSocketRoute):
            checks = _checks(route)
            assert checks.index(require_allowed_origin) < checks.index(require_token)


def test_http_refusal_and_the_two_token_forms(client: TestClient) -> None:
    for path in ("/v3/sessions", "/v3/config", "/v3/webrtc/stats",
                 f"/v3/sessions/{'a' * 32}/transcript"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"detail": "missing or wrong token"}
        assert client.get(path, headers=BEARER).status_code in (200, 404)
    assert client.get("/v3/sessions", params={"token": TOKEN}).json() == []
    assert client.get("/v3/metrics").status_code == 200


def test_a_route_added_under_a_protected_router_needs_the_token() -> None:
    """No per-route call: the router made by protected_router (as routes_http's is) checks."""
    router = protected_router()

    @router.get("/v3/added-later")
    async def added(request: Request) -> dict[str, bool]:
        return {"ok": True}

    app = FastAPI()
    app.state.registry = create_app(V3Config(auth_token=TOKEN)).state.registry
    app.include_router(router)
    client = TestClient(app, base_url="http://localhost")
    r = client.get("/v3/added-later")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v3/added-later", params={"token": "wrong"}).status_code == 401
    assert client.get("/v3/added-later", headers=BEARER).json() == {"ok": True}


@pytest.mark.parametrize("path", ["/ws/v3", "/ws/v3/audio?rate=bad"])
def test_websocket_without_the_token_gets_one_error_and_1008(
        client: TestClient, path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voice_agent.server.signaling")
    with client.websocket_connect(WS + path) as ws:
        assert ws.receive_json() == {"type": "error", "code": "unauthorized",
                                     "message": "missing or wrong token", "fatal": True}
        assert ws.receive() == {"type": "websocket.close", "code": 1008,
                                "reason": "unauthorized"}
    (record,) = [r for r in caplog.records if r.getMessage().startswith("refusing")]
    assert record.getMessage() == f"refusing {path.split('?')[0]}: unauthorized: " \
                                  "missing or wrong token"
    assert record.__dict__["error_type"] is ErrorType.AUTH


def test_websocket_from_a_foreign_page_is_closed_before_the_token_check(
        client: TestClient) -> None:
    with client.websocket_connect(WS + "/ws/v3", headers={"origin": "https://evil.example"}) as ws:
        assert ws.receive() == {"type": "websocket.close", "code": 1008,
                                "reason": "origin_not_allowed"}


@pytest.mark.parametrize("path, headers", [(f"/ws/v3?token={TOKEN}", {}), ("/ws/v3", BEARER)])
def test_websocket_with_the_token_gets_past_the_checks(client: TestClient, path: str,
                                                       headers: dict[str, str]) -> None:
    with client.websocket_connect(WS + path, headers=dict(headers)) as ws:
        message = ws.receive_json()
        assert (message["code"], message["message"]) == ("server_busy", "models are still loading")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1013


def test_the_refusals_after_the_checks_log_their_error_type(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voice_agent.server.signaling")
    for path in (f"/ws/v3/audio?rate=bad&token={TOKEN}", f"/ws/v3?token={TOKEN}"):
        with client.websocket_connect(WS + path) as ws:
            ws.receive_json()
            with pytest.raises(WebSocketDisconnect):
                ws.receive_json()
    refusals = [r for r in caplog.records if r.getMessage().startswith("refusing")]
    assert [(r.getMessage().split(": ")[1], r.__dict__["error_type"]) for r in refusals] == [
        ("invalid_message", ErrorType.VALIDATION), ("server_busy", ErrorType.CAPACITY)]
