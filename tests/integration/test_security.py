"""Who gets in, what leaks, and that sessions cannot see or touch each other."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import TRANSCRIPTS, RunningServer, connect

pytestmark = pytest.mark.models

TOKEN = "tok-Ünïcode-9f8e7d"
API_KEY = "sk-live-abcdef0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}".encode()}  # raw UTF-8 bytes on the wire


async def get(srv: RunningServer, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.http) as http:
        return await http.get(path, **kw)


@pytest.fixture(scope="module")
async def locked(server_factory) -> RunningServer:
    return await server_factory(auth_token=TOKEN, ai={"api_key": API_KEY},
                                server={"cors_origins": ["https://app.example"]})


async def test_http_needs_the_token(locked: RunningServer) -> None:
    transcript = f"/v3/sessions/{uuid.uuid4().hex}/transcript"
    for path in ("/v3/sessions", "/v3/config", "/v3/webrtc/stats", transcript):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN.encode()},
                        {"Authorization": b"Bearer \xe9\xff"}):
            r = await get(locked, path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
        assert (await get(locked, path, headers=BEARER)).status_code in (200, 404)
    assert (await get(locked, "/v3/health")).status_code == 200  # health stays public
    # The URL form works too (non-ASCII percent-encoded as UTF-8).
    assert (await get(locked, "/v3/sessions", params={"token": TOKEN})).status_code == 200


@pytest.mark.parametrize("query, headers", [
    ("", {}), ("?token=wrong", {}), ("?token=%C3%BF%FF", {}), ("?token=", {}),
    ("", {"Authorization": "Bearer nope"}), ("", {"Authorization": "Bearer \xe9"}),
])
@pytest.mark.parametrize("path", ["/ws/v3", "/ws/v3/audio?rate=bad"])
async def test_websockets_without_the_token_get_1008_and_no_session(
        locked: RunningServer, path: str, query: str, headers: dict[str, str]) -> None:
    before = set(p.name for p in TRANSCRIPTS.glob("*.jsonl")) if TRANSCRIPTS.is_dir() else set()
    url = f"{locked.ws}{path}{('&' if '?' in path else '?') + query[1:] if query else ''}"
    async with connect(url, additional_headers=headers) as client:
        assert await client.wait_closed() == 1008
    # One fatal error saying why, nothing else: no session id, nothing about the rate.
    assert [(m["type"], m["code"], m["fatal"]) for m in client.messages] == \
        [("error", "unauthorized", True)]
    assert not locked.registry.sessions.list()
    after = set(p.name for p in TRANSCRIPTS.glob("*.jsonl")) if TRANSCRIPTS.is_dir() else set()
    assert after == before


async def test_websockets_with_the_token(locked: RunningServer) -> None:
    async with connect(f"{locked.ws}/ws/v3?token={TOKEN}") as client:
        await client.wait_type("connection_established")
    async with connect(f"{locked.ws}/ws/v3/audio",
                       additional_headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        await client.wait_type("connection_established")


async def test_cors_allow_list_and_websocket_origins(locked: RunningServer,
                                                     server: RunningServer) -> None:
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    async with httpx.AsyncClient(base_url=locked.http) as http:
        ok = await http.options("/v3/sessions", headers={**preflight, "Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        evil = await http.options("/v3/sessions", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
    # No origins configured: no CORS headers at all (never "*").
    r = await get(server, "/v3/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # A page of another site cannot open a session in the user's browser.
    async with connect(f"{server.ws}/ws/v3", origin="https://evil.example") as client:
        assert await client.wait_closed() == 1008
        assert not client.messages
    for origin in (f"http://127.0.0.1:{server.port}", "http://localhost:5173"):
        async with connect(f"{server.ws}/ws/v3", origin=origin) as client:
            await client.wait_type("connection_established")
    async with connect(f"{locked.ws}/ws/v3?token={TOKEN}", origin="https://app.example") as client:
        await client.wait_type("connection_established")


async def test_secrets_never_leak(locked: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    # uvicorn's loggers do not propagate to the root logger: listen to them directly.
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn.error", "uvicorn.access"):
        caplog.set_level(logging.DEBUG, logger=name)
    texts: list[str] = []
    try:
        config = await get(locked, "/v3/config", headers=BEARER)
        assert config.status_code == 200 and config.json()["ai"]["api_key"] == "**********"
        assert config.json()["auth_token"] == "**********"
        texts.append(config.text)
        for headers in ({}, {"Authorization": ("Bearer " + TOKEN[:-1]).encode()}):
            texts.append((await get(locked, "/v3/config", headers=headers)).text)  # type: ignore
        texts.append((await get(locked, "/v3/sessions/../../etc/passwd/transcript",
                                headers=BEARER)).text)
        async with connect(f"{locked.ws}/ws/v3?token={TOKEN}") as client:
            await client.wait_type("connection_established")
            await client.send("{broken")
            await client.send({"type": "offer", "sdp": "v=0\r\nm=audio x"})
            await client.send({"type": "ice-candidate", "candidate": {"candidate": TOKEN}})
            await client.send({"type": "ping"})
            await client.wait_type("pong")
            texts.extend(str(m) for m in client.messages)
        async with connect(f"{locked.ws}/ws/v3?token={TOKEN}x") as client:
            await client.wait_closed()
            texts.extend(str(m) for m in client.messages)
    finally:
        uvicorn_logger.removeHandler(caplog.handler)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "WebSocket /ws/v3?token=***" in logged  # the access line is there, masked
    for secret in (TOKEN, API_KEY):
        assert secret not in logged
        for text in texts:
            assert secret not in text


async def test_sessions_are_isolated(server: RunningServer) -> None:
    async with connect(f"{server.ws}/ws/v3/audio") as a, connect(f"{server.ws}/ws/v3") as b:
        id_a = (await a.wait_type("connection_established"))["session_id"]
        id_b = (await b.wait_type("connection_established"))["session_id"]
        for sid in (id_a, id_b):
            assert uuid.UUID(hex=sid).version == 4 and sid == uuid.UUID(hex=sid).hex
        assert id_a != id_b
        seen_by_b = len(b.messages)
        await a.send({"type": "text", "text": "What is the capital of France?"})
        await a.wait_type("ai_response", 60, final=True)
        await a.send({"type": "interrupt"})
        await a.send({"type": "end"})
        assert await a.wait_closed() == 1000
        # B saw nothing of A's conversation and is still there, answering.
        assert [m["type"] for m in b.messages[seen_by_b:]] == []
        await b.send({"type": "ping", "timestamp": 1})
        await b.wait_type("pong")
        assert [s.id for s in server.registry.sessions.list()] == [id_b]
    # Neither transcript holds the other's words.
    b_text = (TRANSCRIPTS / f"{id_b}.jsonl").read_text()
    assert "France" not in b_text and id_a not in b_text
    assert "France" in (TRANSCRIPTS / f"{id_a}.jsonl").read_text()


async def test_a_bad_session_id_cannot_end_another(server: RunningServer) -> None:
    """Messages carry no session id the server trusts: a forged one changes nothing."""
    async with connect(f"{server.ws}/ws/v3") as victim, connect(f"{server.ws}/ws/v3") as other:
        vid = (await victim.wait_type("connection_established"))["session_id"]
        await other.wait_type("connection_established")
        await other.send({"type": "end", "session_id": vid})
        assert await other.wait_closed() == 1000
        await victim.send({"type": "ping"})
        await victim.wait_type("pong")
        assert server.registry.sessions.get(vid) is not None


def test_the_models_own_loopback_listener_needs_its_key(services) -> None:
    """xllamacpp's in-process server also listens on a random 127.0.0.1 port: without a key
    any local process, or a web page that found the port, could use the model."""
    import json
    import urllib.error
    import urllib.request

    llm = services.llm
    address = llm._server.listening_address
    body = json.dumps({"content": "hello"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(
            f"{address}/tokenize", data=body, headers={"Content-Type": "application/json"}),
            timeout=5)
    assert refused.value.code == 401
    ok = urllib.request.urlopen(urllib.request.Request(
        f"{address}/tokenize", data=body, headers={"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {llm.http_key}"}),
        timeout=5)
    assert json.loads(ok.read())["tokens"]
