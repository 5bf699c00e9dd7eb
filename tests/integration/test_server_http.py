"""HTTP endpoints of the running server: page, info, health, sessions, config, auth."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import RunningServer, connect
from voice_agent.server import routes_http

pytestmark = pytest.mark.models


async def get(server: RunningServer, path: str, **kw) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http) as http:
        return await http.get(path, **kw)


async def test_service_info_as_json(server: RunningServer) -> None:
    for kw in ({"params": {"format": "json"}}, {"headers": {"Accept": "application/json"}}):
        response = await get(server, "/", **kw)
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == "voice-agent" and body["version"]
        assert body["endpoints"]["signaling"] == "/ws/v3"
        assert body["endpoints"]["audio"] == "/ws/v3/audio"


async def test_page_and_assets_from_web_dist(server_factory, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html><body>voice agent page</body></html>")
    (dist / "assets" / "app.js").write_text("console.log('hi')")
    (dist / "mic-level-worklet.js").write_text("// worklet")
    (tmp_path / "secret.txt").write_text("outside")
    monkeypatch.setattr(routes_http, "find_web_dist", lambda: dist)
    srv = await server_factory()
    page = await get(srv, "/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "voice agent page" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert (await get(srv, "/assets/app.js")).text == "console.log('hi')"
    assert (await get(srv, "/mic-level-worklet.js")).text == "// worklet"
    assert (await get(srv, "/secret.txt")).status_code == 404
    assert (await get(srv, "/..%2Fsecret.txt")).status_code == 404
    assert (await get(srv, "/", params={"format": "json"})).json()["name"] == "voice-agent"


async def test_health_reports_models_and_sessions(server: RunningServer) -> None:
    body = (await get(server, "/v3/health")).json()
    assert body["status"] == "ok"
    assert set(body["models"]) == {"stt", "vad", "llm", "tts"}
    assert all(m["loaded"] for m in body["models"].values())
    assert body["uptime_s"] > 0 and body["max_sessions"] == 4
    mem = body["memory"]  # the models alone take over a gigabyte, nearly all of it resident
    assert mem["rss_mb"] > 1000 and mem["peak_rss_mb"] >= mem["rss_mb"]
    assert mem["heap_in_use_mb"] > 0 and mem["heap_free_mb"] >= 0
    async with connect(f"{server.ws}/ws/v3") as client:
        hello = await client.wait_type("connection_established")
        assert (await get(server, "/v3/health")).json()["active_sessions"] >= 1
        sessions = (await get(server, "/v3/sessions")).json()
        mine = [s for s in sessions if s["session_id"] == hello["session_id"]]
        assert mine and mine[0]["transport"] == "webrtc"
        assert {"started_at", "duration_s", "connection_status", "processing_status",
                "messages_processed", "errors"} <= set(mine[0])
        stats = (await get(server, "/v3/webrtc/stats")).json()
        assert stats["sessions"][hello["session_id"]]["connection_state"] == "new"


async def test_config_is_redacted_and_auth_is_enforced(server_factory) -> None:
    srv = await server_factory(auth_token="s3cret-token",
                               ai={"api_key": "sk-very-secret"})
    assert (await get(srv, "/v3/config")).status_code == 401
    assert (await get(srv, "/v3/sessions")).status_code == 401
    assert (await get(srv, "/v3/health")).status_code == 200  # health stays public
    ok = await get(srv, "/v3/config", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200
    assert "s3cret-token" not in ok.text and "sk-very-secret" not in ok.text
    assert ok.json()["ai"]["model"]
    assert (await get(srv, "/v3/sessions", params={"token": "s3cret-token"})).json() == []
    async with connect(f"{srv.ws}/ws/v3") as client:
        err = await client.wait_type("error")
        assert err["code"] == "unauthorized" and err["fatal"] is True
        assert await client.wait_closed() == 1008
    async with connect(f"{srv.ws}/ws/v3?token=s3cret-token") as client:
        await client.wait_type("connection_established")
    async with connect(f"{srv.ws}/ws/v3/audio",
                       additional_headers={"Authorization": "Bearer s3cret-token"}) as client:
        await client.wait_type("connection_established")


async def test_openapi_docs(server: RunningServer) -> None:
    spec = (await get(server, "/openapi.json")).json()
    assert "/v3/health" in spec["paths"] and "/v3/sessions" in spec["paths"]
    assert (await get(server, "/docs")).status_code == 200
