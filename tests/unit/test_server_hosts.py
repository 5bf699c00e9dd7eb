"""DNS rebinding: the server answers only to its own names (HTTP and both sockets), token or not.

The app runs without its lifespan (no models): a socket that gets past the host check is told
the models are still loading, which is how these tests see that it got in.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from voice_agent.core.config import V3Config
from voice_agent.server.app import create_app
from voice_agent.server.hosts import allowed_hosts, host_name

FOREIGN = {"host": "attacker.example:8000", "origin": "http://attacker.example:8000"}
"""What a rebinding page's requests carry: its own name in Host and Origin."""
HTTP_PATHS = ["/v3/sessions", "/v3/config", "/v3/webrtc/stats", "/v3/health",
              "/v3/sessions/0123/transcript", "/"]


def app_client(**server: object) -> TestClient:
    return TestClient(create_app(V3Config(server=server)), base_url="http://localhost")


@pytest.mark.parametrize("token", [None, "s3cret"])
@pytest.mark.parametrize("path", HTTP_PATHS)
def test_http_with_a_foreign_host_is_refused(path: str, token: str | None) -> None:
    client = TestClient(create_app(V3Config(auth_token=token)), base_url="http://localhost")
    headers = {**FOREIGN, **({"authorization": f"Bearer {token}"} if token else {})}
    r = client.get(path, headers=headers)
    assert r.status_code == 403, (path, r.text)
    assert r.json() == {"detail": "host not allowed", "code": "host_not_allowed"}
    # The same request under the server's own name is answered (or refused for other reasons).
    assert client.get(path, headers={k: v for k, v in headers.items() if k != "host"}
                      ).status_code not in (400, 403)


@pytest.mark.parametrize("path", ["/ws/v3", "/ws/v3/audio"])
def test_websockets_with_a_foreign_host_are_refused_at_the_handshake(
        path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voice_agent.server.hosts")
    client = app_client()
    # The handshake gets the HTTP 403 (the ASGI denial response): the socket never opens.
    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect(f"ws://attacker.example:8000{path}", headers=FOREIGN):
            pass
    assert refused.value.status_code == 403
    assert refused.value.json()["code"] == "host_not_allowed"
    assert "not an allowed host" in caplog.text
    # A page served by this server still connects.
    with client.websocket_connect(f"ws://localhost:8000{path}",
                                  headers={"origin": "http://localhost:8000"}) as ws:
        assert ws.receive_json()["message"] == "models are still loading"


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost",
                                  "LOCALHOST.:8000", "127.0.0.1"])
def test_the_default_names_are_answered(host: str) -> None:
    assert app_client().get("/v3/health", headers={"host": host}).status_code != 403


@pytest.mark.parametrize("host", ["attacker.example", "127.0.0.1.nip.io:8000", "localhost.evil:80",
                                  "", "[::1", "local host", "127.0.0.2:8000", "0.0.0.0:8000"])
def test_other_names_are_refused(host: str) -> None:
    assert app_client().get("/v3/health", headers={"host": host}).status_code == 403


def test_allowed_hosts_and_the_bind_address_extend_the_list() -> None:
    client = app_client(host="192.168.1.20", allowed_hosts=["voice.lan", "[fd00::1]"])
    for host in ("voice.lan:8000", "192.168.1.20:8000", "[fd00::1]:8000", "localhost:8000"):
        assert client.get("/v3/health", headers={"host": host}).status_code != 403, host
    assert client.get("/v3/health", headers={"host": "other.lan"}).status_code == 403
    assert app_client(allowed_hosts=["*"]).get(
        "/v3/health", headers={"host": "anything.example"}).status_code != 403
    # Binding every interface names no host: LAN names must be listed.
    assert allowed_hosts("0.0.0.0", []) == {"localhost", "127.0.0.1", "::1"}


def test_host_header_parsing() -> None:
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost.:80") == "localhost"
    assert host_name("[::1]x") is None and host_name("a:b") is None and host_name(None) is None
