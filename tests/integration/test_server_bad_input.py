"""Bad input gets a typed, non-fatal error and the session (and the server) carry on."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.integration.conftest import RunningServer, connect, negotiate

pytestmark = pytest.mark.models

GARBAGE_SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nthis is not sdp\r\nm=audio banana\r\n"


async def expect_error(client, payload, code: str) -> dict:
    start = len(client.messages)
    await client.send(payload)
    err = await client.wait_type("error", 5, start)
    assert err["code"] == code, err
    assert err["fatal"] is False and err["message"]
    return err


async def still_alive(client) -> None:
    start = len(client.messages)
    await client.send({"type": "ping", "timestamp": 42})
    assert (await client.wait_type("pong", 5, start))["timestamp"] == 42


async def test_each_bad_message_gets_an_error_and_the_session_goes_on(
        server: RunningServer) -> None:
    async with connect(f"{server.ws}/ws/v3") as bystander, \
            connect(f"{server.ws}/ws/v3") as client:
        await bystander.wait_type("connection_established")
        hello = await client.wait_type("connection_established")
        candidate = {"type": "ice-candidate", "candidate": {
            "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
            "sdpMid": "0", "sdpMLineIndex": 0}}
        await expect_error(client, "{not json", "invalid_json")
        await expect_error(client, "[1, 2, 3]", "invalid_message")
        await expect_error(client, {"type": "teleport"}, "unknown_type")
        await expect_error(client, {"sdp": "v=0"}, "invalid_message")
        await expect_error(client, {"type": "text", "text": ""}, "invalid_message")
        await expect_error(client, {"type": "text", "text": "x" * 5000}, "invalid_message")
        await expect_error(client, {"type": "offer", "sdp": "hello"}, "invalid_sdp")
        await expect_error(client, {"type": "offer", "sdp": GARBAGE_SDP}, "invalid_sdp")
        await expect_error(client, candidate, "no_offer")
        await expect_error(client, {"type": "ice-candidate", "candidate": None}, "no_offer")
        await expect_error(client, b"\x00\x01", "unsupported")
        await expect_error(client, "[" * 1000 + "]" * 1000, "invalid_message")  # was close 1011
        await expect_error(client, '{"type": "ping", "timestamp": 1e400}', "invalid_json")
        await expect_error(client, '{"type": "ping", "timestamp": NaN}', "invalid_json")
        await still_alive(client)
        # After all that, a real offer still works, then a second one is refused.
        rtc = await negotiate(client)
        try:
            await expect_error(client, {"type": "offer", "sdp": rtc.pc.localDescription.sdp},
                               "duplicate_offer")
            bad = {"type": "ice-candidate", "candidate": {"candidate": "candidate:garbage",
                                                          "sdpMid": "0"}}
            await expect_error(client, bad, "invalid_candidate")
            for bad_mid in ({"sdpMid": "7"}, {"sdpMLineIndex": 9}, {"sdpMid": "0", "sdpMLineIndex": 1},
                            {"sdpMid": "x" * 500}):
                await expect_error(client, {"type": "ice-candidate", "candidate": {
                    **candidate["candidate"], "sdpMid": None, "sdpMLineIndex": None, **bad_mid}},
                    "invalid_candidate")  # these were dropped by aiortc without a word
            await client.send(candidate)  # a well-formed candidate after the offer is accepted
            await client.send({"type": "ice-candidate", "candidate": {"candidate": ""}})
            await client.send({"type": "ice-candidate", "candidate": None})  # a second end: fine
            err = await expect_error(client, candidate, "invalid_candidate")
            assert "end-of-candidates" in err["message"]
            await still_alive(client)
            assert rtc.pc.connectionState == "connected"
            # The other session was never disturbed, and can hold a conversation.
            await still_alive(bystander)
            await bystander.send({"type": "text", "text": "What is the capital of France?"})
            reply = await bystander.wait_type("ai_response", 60, final=True)
            assert "paris" in reply["text"].lower()
            assert not [m for m in bystander.messages if m["type"] == "error"]
        finally:
            await rtc.close()
        sessions = {s["session_id"]: s for s in
                    json.loads((await _get(server, "/v3/sessions")))}
        assert sessions[hello["session_id"]]["errors"] >= 21


async def test_server_busy_beyond_max_sessions(server_factory) -> None:
    srv = await server_factory(server={"max_sessions": 1})
    async with connect(f"{srv.ws}/ws/v3") as first:
        await first.wait_type("connection_established")
        async with connect(f"{srv.ws}/ws/v3") as second:
            err = await second.wait_type("error")
            assert err["code"] == "busy" and err["fatal"] is True
            assert await second.wait_closed() == 1013
        async with connect(f"{srv.ws}/ws/v3/audio") as third:
            assert (await third.wait_type("error"))["code"] == "busy"
        await still_alive(first)
    # Once the first one left there is room again.
    for _ in range(50):
        if not srv.registry.sessions.list():
            break
        await asyncio.sleep(0.05)
    async with connect(f"{srv.ws}/ws/v3") as again:
        await again.wait_type("connection_established")


async def test_rate_limit_and_client_that_vanishes(server_factory) -> None:
    srv = await server_factory(server={"messages_per_second": 5})
    async with connect(f"{srv.ws}/ws/v3") as client:
        await client.wait_type("connection_established")
        for _ in range(30):
            await client.send({"type": "ping"})
        err = await client.wait_type("error", 5)
        assert err["code"] == "rate_limited" and err["fatal"] is False
        await asyncio.sleep(1.0)
        await still_alive(client)
    async with connect(f"{srv.ws}/ws/v3") as client:
        await client.wait_type("connection_established")
        await negotiate(client)  # the peer connection is left open on purpose
        client.ws.transport.abort()  # no close frame: the TCP connection just drops
    for _ in range(100):
        if not srv.registry.sessions.list():
            break
        await asyncio.sleep(0.05)
    assert not srv.registry.sessions.list()


async def _get(server: RunningServer, path: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=server.http) as http:
        return (await http.get(path)).text


async def test_a_peer_that_drops_its_media_is_told_at_once(server_factory) -> None:
    srv = await server_factory()
    async with connect(f"{srv.ws}/ws/v3") as client:
        await client.wait_type("connection_established")
        rtc = await negotiate(client)
        await rtc.close()  # the peer connection closes, the socket stays open
        lost = await client.wait_type("error", 5)
        assert lost["code"] == "transport_failed" and lost["fatal"] is False


async def test_an_idle_conversation_is_closed_pings_and_silence_or_not(server_factory) -> None:
    """A socket that pinged, or streamed silence, was never reaped (until the 1 h session
    limit): four such held every slot. Only the conversation counts as activity: speech, typed
    text and the agent's replies, however long one of them takes."""
    idle = 1.0
    srv = await server_factory(server={"idle_timeout_s": idle})
    async with connect(f"{srv.ws}/ws/v3") as pinger, connect(f"{srv.ws}/ws/v3") as silent, \
            connect(f"{srv.ws}/ws/v3/audio") as raw, connect(f"{srv.ws}/ws/v3") as talker:
        for client in (pinger, silent, raw, talker):
            await client.wait_type("connection_established")
        rtc = await negotiate(silent)  # its microphone sends silence, 50 packets a second
        await talker.send({"type": "text", "text": "Tell me a long story about a dragon."})
        asked_at = time.monotonic()

        async def keep_sending() -> None:
            while True:
                await pinger.send({"type": "ping"})
                await raw.send(b"\x00\x00" * 1600)  # 0.1 s of silence
                await asyncio.sleep(0.1)

        sender = asyncio.get_running_loop().create_task(keep_sending())
        try:
            for client in (pinger, silent, raw):
                err = await client.wait_type("error", idle + 5, code="session_timeout")
                assert err["fatal"] is True and "no speech" in err["message"]
                assert await client.wait_closed() == 4000
        finally:
            sender.cancel()
            await rtc.close()
        # The reply outlived the idle time, and kept its session: it ended, and then the idle
        # time ran from there.
        reply = await talker.wait_type("ai_response", 60, final=True)
        replied_at = time.monotonic()
        assert replied_at - asked_at > idle, "the reply was too short to test this"
        assert not [m for m in talker.messages if m.get("code") == "session_timeout"
                    and talker.messages.index(m) < talker.messages.index(reply)]
        await talker.wait_type("error", idle + 5, code="session_timeout")
        assert await talker.wait_closed() == 4000
    assert not srv.registry.sessions.list()
