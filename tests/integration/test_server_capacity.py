"""Admission control over a real server on loopback: a session beyond the capacity is refused
with ``busy`` at once, before anything is negotiated, and /v3/health's ``load`` follows."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.integration.conftest import RunningServer, connect, negotiate

pytestmark = pytest.mark.models


async def health(server: RunningServer) -> dict:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get("/v3/health")
        assert response.status_code == 200
        return response.json()


async def wait_load(server: RunningServer, load: float, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = await health(server)
        if body["load"] == load or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_full_server_refuses_with_busy_up_front_and_load_falls_back(server_factory) -> None:
    srv = await server_factory(server={"max_sessions": 2})
    body = await health(srv)
    assert (body["capacity"], body["max_sessions"], body["load"]) == (2, 2, 0.0)
    async with connect(f"{srv.ws}/ws/v3") as first, connect(f"{srv.ws}/ws/v3/audio") as second:
        await first.wait_type("connection_established")
        await second.wait_type("connection_established")
        rtc = await negotiate(first)  # one session with media up: capacity is sessions, not media
        try:
            assert (await health(srv))["load"] == 1.0
            for path in ("/ws/v3", "/ws/v3/audio"):
                t0 = time.monotonic()
                async with connect(f"{srv.ws}{path}") as third:
                    err = await third.wait_type("error", 5)
                    refused_s = time.monotonic() - t0
                    assert await third.wait_closed() == 1013
                # Up front: the refusal is the first and only message, nothing was negotiated.
                assert third.messages == [err], third.messages
                assert err["code"] == "busy" and err["fatal"] is True
                assert err["retry_after_s"] > 0
                assert (err["capacity"], err["active_sessions"]) == (2, 2)
                assert "seq" not in err  # no session was made for it
                assert refused_s < 2.0, refused_s
            # Refusals took no slot and left the two sessions as they were.
            assert (await health(srv))["active_sessions"] == 2
            await first.send({"type": "ping", "timestamp": 1})
            await first.wait_type("pong")
        finally:
            await rtc.close()
        await first.send({"type": "end"})
        assert await first.wait_closed(10) == 1000
        assert (await wait_load(srv, 0.5))["load"] == 0.5
    assert (await wait_load(srv, 0.0))["load"] == 0.0
    async with httpx.AsyncClient(base_url=srv.http) as http:
        prom = (await http.get("/v3/metrics")).text
    assert 'voice_agent_sessions_refused_total{code="busy"} 2.0' in prom
    assert "voice_agent_load 0.0" in prom
    # There is room again.
    async with connect(f"{srv.ws}/ws/v3") as again:
        await again.wait_type("connection_established")
        assert (await health(srv))["load"] == 0.5


async def test_bench_counts_a_busy_session_as_refused_not_as_failed_turns(server_factory) -> None:
    from bench.latency import _one_session

    srv = await server_factory(server={"max_sessions": 1})
    async with connect(f"{srv.ws}/ws/v3/audio") as first:
        await first.wait_type("connection_established")
        async with httpx.AsyncClient(base_url=srv.http) as http:
            turns, ops = await _one_session(srv.http, [], 3, 0, http)
    assert turns == [] and ops.refused == "busy" and not ops.error
    assert ops.refused_ms is not None and ops.refused_ms < 2000
