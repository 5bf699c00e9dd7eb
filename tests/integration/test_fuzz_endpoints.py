"""Property-based bad input against the real server: /ws/v3 and /ws/v3/audio.

Every message gets a documented answer (an `error` with a known code, or its normal reply);
after every example the fuzzed connection, a fresh connection, /v3/health and a bystander
session all still work.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import Client, RunningServer, connect
from voice_agent.transport.protocol import CLIENT_MESSAGE_TYPES, ErrorCode

pytestmark = pytest.mark.models

MAX_BYTES = 4096
DOCUMENTED = {v for k, v in vars(ErrorCode).items() if k.isupper()}
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
_seq = itertools.count(1)

# JSON values: finite numbers only (json.dumps writes inf as Infinity, which is not JSON and
# is refused as invalid_json; test_server_bad_input.py checks that).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20)
# Values of the wrong kind for string, number and object fields alike.
not_a_string = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=3) \
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
not_a_number = st.booleans() | st.text(alphabet="xyz!", min_size=1, max_size=8) \
    | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=5), st.none())
FIELDS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "offer": ("sdp", not_a_string),
    "text": ("text", not_a_string),
    "ice-candidate": ("candidate", st.integers() | st.text(max_size=10) | st.lists(st.none())),
    "ping": ("timestamp", not_a_number),
}


class Fuzzer:
    def __init__(self, srv: RunningServer, client: Client, bystander: Client,
                 http: httpx.AsyncClient) -> None:
        self.srv, self.client, self.bystander, self.http = srv, client, bystander, http

    async def answers(self, payload: str | bytes | dict[str, Any]) -> list[dict[str, Any]]:
        """Send one message, then a ping; return what came back in between (the ping's pong
        proves the connection is still served and in order)."""
        start = len(self.client.messages)
        await self.client.send(payload)
        mark = next(_seq)
        await self.client.send({"type": "ping", "timestamp": mark})
        await self.client.wait_type("pong", 10, start, timestamp=mark)
        got = []
        for msg in self.client.messages[start:]:
            if msg.get("type") == "pong" and msg.get("timestamp") == mark:
                break
            got.append(msg)
        for msg in got:
            assert msg["type"] in ("error", "pong", "status"), msg
            if msg["type"] == "error":
                assert msg["code"] in DOCUMENTED and msg["fatal"] is False and msg["message"], msg
        return got

    async def error_code(self, payload: str | bytes | dict[str, Any]) -> str:
        errors = [m for m in await self.answers(payload) if m["type"] == "error"]
        assert len(errors) == 1, errors
        return str(errors[0]["code"])

    async def server_still_answers(self) -> None:
        assert (await self.http.get("/v3/health")).json()["status"] == "ok"
        async with connect(f"{self.srv.ws}/ws/v3") as fresh:
            await fresh.wait_type("connection_established")
            await fresh.send({"type": "ping", "timestamp": 1})
            await fresh.wait_type("pong", 5)
        start = len(self.bystander.messages)
        await self.bystander.send({"type": "ping", "timestamp": -1})
        await self.bystander.wait_type("pong", 5, start, timestamp=-1)
        assert not [m for m in self.bystander.messages if m["type"] == "error"]


@pytest.fixture(scope="module")
async def fuzz_server(server_factory) -> RunningServer:
    return await server_factory(server={"max_message_bytes": MAX_BYTES,
                                        "messages_per_second": 10_000, "max_sessions": 6})


@pytest.fixture(scope="module")
async def fuzzer(fuzz_server: RunningServer) -> AsyncIterator[Fuzzer]:
    async with connect(f"{fuzz_server.ws}/ws/v3") as client, \
            connect(f"{fuzz_server.ws}/ws/v3/audio") as bystander, \
            httpx.AsyncClient(base_url=fuzz_server.http) as http:
        await client.wait_type("connection_established")
        await bystander.wait_type("connection_established")
        yield Fuzzer(fuzz_server, client, bystander, http)


@FUZZ
@given(value=json_values)
async def test_arbitrary_json_values(fuzzer: Fuzzer, value: Any) -> None:
    # Well-formed messages that start a turn or end the session are not bad input.
    assume(not (isinstance(value, dict) and value.get("type") in ("text", "end")))
    await fuzzer.answers(json.dumps(value))
    await fuzzer.server_still_answers()


@FUZZ
@given(kind=st.sampled_from(sorted(FIELDS)), data=st.data(),
       extra=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("type",)),
                             json_values, max_size=3))
async def test_wrong_type_for_each_field(fuzzer: Fuzzer, kind: str, data: st.DataObject,
                                         extra: dict[str, Any]) -> None:
    field, wrong = FIELDS[kind]
    message = {**extra, "type": kind, field: data.draw(wrong)}
    assert await fuzzer.error_code(message) == "invalid_message"
    await fuzzer.server_still_answers()


@FUZZ
@given(message=st.sampled_from(['{"type": "ping", "timestamp": 12.5}',
                                '{"type": "offer", "sdp": "v=0\\r\\n"}',
                                '{"type": "text", "text": "hello"}']),
       cut=st.integers(min_value=0, max_value=30),
       extra=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4))
async def test_truncated_json_and_unknown_fields(fuzzer: Fuzzer, message: str, cut: int,
                                                 extra: dict[str, Any]) -> None:
    cut = min(cut, len(message) - 1)
    assert await fuzzer.error_code(message[:cut]) == "invalid_json"
    # Unknown fields are ignored: a ping with extras is still a ping.
    extra.pop("type", None)
    extra.pop("timestamp", None)
    got = await fuzzer.answers({**extra, "type": "ping", "timestamp": -5})
    assert [m["type"] for m in got] == ["pong"] and got[0]["timestamp"] == -5


@settings(FUZZ, max_examples=20)
@given(size=st.integers(min_value=MAX_BYTES + 1, max_value=8 * MAX_BYTES),
       char=st.sampled_from(["a", "é", "语", "😀"]), binary=st.booleans())
async def test_huge_messages_and_binary_frames(fuzzer: Fuzzer, size: int, char: str,
                                               binary: bool) -> None:
    text = json.dumps({"type": "text", "text": char * (size // len(char.encode()))})
    assert await fuzzer.error_code(text) == "message_too_large"
    if binary:  # binary where text is expected
        assert await fuzzer.error_code(char.encode() * 10) == "unsupported"
    await fuzzer.server_still_answers()


sdp_lines = st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60)
                     | st.sampled_from(["m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2",
                                        "c=IN IP4 0.0.0.0", "a=setup:actpass", "m=video 0 x",
                                        "a=mid:0", "a=fingerprint:sha-256 00"]),
                     max_size=12)


@FUZZ
@given(lines=sdp_lines, candidate=st.fixed_dictionaries(
    {"candidate": st.text(max_size=60)},
    optional={"sdpMid": st.none() | st.text(max_size=4),
              "sdpMLineIndex": st.none() | st.integers(0, 1024)}))
async def test_sdp_garbage_and_candidates_before_the_offer(fuzzer: Fuzzer, lines: list[str],
                                                           candidate: dict[str, Any]) -> None:
    sdp = "\r\n".join(["v=0", *lines]) + "\r\n"
    assert await fuzzer.error_code({"type": "offer", "sdp": sdp}) == "invalid_sdp"
    code = await fuzzer.error_code({"type": "ice-candidate", "candidate": candidate})
    assert code == "no_offer"
    await fuzzer.server_still_answers()


@settings(FUZZ, max_examples=30)
@given(frames=st.lists(st.binary(max_size=701), min_size=1, max_size=8))
async def test_odd_pcm_frames(fuzzer: Fuzzer, frames: list[bytes]) -> None:
    """Any bytes are PCM on /ws/v3/audio: odd lengths are joined, nothing is an error."""
    bystander = fuzzer.bystander  # the audio socket: here the fuzzed one
    start = len(bystander.messages)
    for frame in frames:
        # Quiet: the low byte is free, the high byte 0 or 0xff, so no speech is heard.
        await bystander.send(bytes(b if i % 2 == 0 else (0 if b < 128 else 255)
                                   for i, b in enumerate(frame)))
    await bystander.send({"type": "ping", "timestamp": 3})
    await bystander.wait_type("pong", 10, start, timestamp=3)
    assert [m for m in bystander.messages[start:] if m["type"] == "error"] == []


async def test_unsupported_codecs_get_a_clear_error(fuzzer: Fuzzer) -> None:
    def offer(kind: str, codec: str) -> str:
        return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
                f"m={kind} 9 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
                f"a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:97 {codec}\r\na=ice-ufrag:abcd\r\n"
                "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 "
                + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n")

    for kind, codec, hint in (("audio", "iLBC/8000", "Opus"), ("video", "VP8/90000", "no audio")):
        got = [m for m in await fuzzer.answers({"type": "offer", "sdp": offer(kind, codec)})
               if m["type"] == "error"]
        assert len(got) == 1 and got[0]["code"] == "invalid_sdp", got
        assert hint in got[0]["message"]
    await fuzzer.server_still_answers()


async def test_messages_after_end_are_ignored(fuzz_server: RunningServer) -> None:
    async with connect(f"{fuzz_server.ws}/ws/v3") as client:
        sid = (await client.wait_type("connection_established"))["session_id"]
        await client.send({"type": "end"})
        for payload in ({"type": "ping"}, {"type": "text", "text": "hello"}, "{bad", b"\x00"):
            try:
                await client.send(payload)
            except Exception:  # the server may have closed already
                break
        assert await client.wait_closed() == 1000
        assert not [m for m in client.messages if m["type"] in ("error", "transcript")]
    assert fuzz_server.registry.sessions.get(sid) is None


async def test_floods_are_limited(server_factory) -> None:
    srv = await server_factory(server={"messages_per_second": 20})
    async with connect(f"{srv.ws}/ws/v3") as client, connect(f"{srv.ws}/ws/v3") as bystander:
        await client.wait_type("connection_established")
        await bystander.wait_type("connection_established")
        for i in range(400):
            await client.send({"type": "ping"} if i % 2 else b"\x01\x02")
        await client.wait_type("error", 5, code="rate_limited")
        # The flood is answered with one notice a second, not one error per message.
        errors = [m for m in client.messages if m["type"] == "error"]
        limited = [m for m in errors if m["code"] == "rate_limited"]
        assert 1 <= len(limited) <= 2 and len(errors) <= 45, errors
        await bystander.send({"type": "ping", "timestamp": 9})
        await bystander.wait_type("pong", 5, timestamp=9)
        assert srv.registry.sessions.get(
            (await client.wait_type("connection_established"))["session_id"]) is not None
    assert CLIENT_MESSAGE_TYPES  # the documented set the fuzzers draw from
