"""Client message validation and server message shapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice_agent.transport import protocol
from voice_agent.transport.protocol import (ErrorCode, IceCandidateMessage, OfferMessage,
                                            PingMessage, ProtocolError, TextMessage,
                                            parse_client_message)


def code_of(raw: str | bytes, **kw: int) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw, **kw)
    return info.value.code


def test_each_client_message_parses() -> None:
    assert isinstance(parse_client_message('{"type":"offer","sdp":"v=0\\r\\n"}'), OfferMessage)
    msg = parse_client_message('{"type":"text","text":"  hello  ","extra":1}')
    assert isinstance(msg, TextMessage) and msg.text == "hello"
    assert parse_client_message(b'{"type":"interrupt"}').type == "interrupt"
    ping = parse_client_message('{"type":"ping","timestamp":12.5}')
    assert isinstance(ping, PingMessage) and ping.timestamp == 12.5
    assert parse_client_message('{"type":"end"}').type == "end"


def test_ice_candidate_forms() -> None:
    full = parse_client_message(json.dumps({"type": "ice-candidate", "candidate": {
        "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}))
    assert isinstance(full, IceCandidateMessage) and not full.end_of_candidates
    assert full.candidate is not None and full.candidate.sdpMid == "0"
    for end in ('{"type":"ice-candidate","candidate":null}', '{"type":"ice-candidate"}',
                '{"type":"ice-candidate","candidate":{"candidate":""}}'):
        msg = parse_client_message(end)
        assert isinstance(msg, IceCandidateMessage) and msg.end_of_candidates


@pytest.mark.parametrize("raw, code", [
    ("{not json", ErrorCode.INVALID_JSON),
    (b"\xff\xfe", ErrorCode.INVALID_JSON),
    ("[1,2]", ErrorCode.INVALID_MESSAGE),
    ('{"sdp":"x"}', ErrorCode.INVALID_MESSAGE),
    ('{"type":5}', ErrorCode.INVALID_MESSAGE),
    ('{"type":"dance"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type":"offer"}', ErrorCode.INVALID_MESSAGE),
    ('{"type":"offer","sdp":""}', ErrorCode.INVALID_MESSAGE),
    ('{"type":"text","text":"   "}', ErrorCode.INVALID_MESSAGE),
    ('{"type":"text"}', ErrorCode.INVALID_MESSAGE),
    ('{"type":"text","text":42}', ErrorCode.INVALID_MESSAGE),
    ('{"type":"ice-candidate","candidate":"x"}', ErrorCode.INVALID_MESSAGE),
])
def test_bad_messages_get_typed_errors(raw: str | bytes, code: str) -> None:
    assert code_of(raw) == code


@pytest.mark.parametrize("raw", [
    "[" * 1000 + "]" * 1000,  # 2 KB: Python's parser raised RecursionError (an internal_error)
    '{"type":"ping","x":' + "[" * 5000 + "]" * 5000 + "}",
    '{"type":"text","text":"hi","x":' + '{"a":' * 40 + "1" + "}" * 40 + "}",
])
def test_deep_nesting_is_an_invalid_message(raw: str) -> None:
    assert code_of(raw) == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(number: str) -> None:
    """Echoed in a pong they came back as bare Infinity/NaN, which JSON.parse rejects."""
    assert code_of('{"type":"ping","timestamp":%s}' % number) == ErrorCode.INVALID_JSON
    assert code_of('{"type":"text","text":"hi","extra":[%s]}' % number) == ErrorCode.INVALID_JSON
    assert parse_client_message('{"type":"ping","timestamp":1e300}').timestamp == 1e300


def test_size_limits() -> None:
    assert code_of('{"type":"text","text":"' + "a" * 5000 + '"}') == ErrorCode.INVALID_MESSAGE
    assert code_of('{"type":"ping"}' + " " * 2000, max_bytes=1024) == ErrorCode.MESSAGE_TOO_LARGE


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_input_never_crashes(raw: str | bytes) -> None:
    try:
        parse_client_message(raw)
    except ProtocolError as exc:
        assert exc.code in {ErrorCode.INVALID_JSON, ErrorCode.INVALID_MESSAGE,
                            ErrorCode.UNKNOWN_TYPE}


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=10),
                       max_size=4), st.sampled_from(protocol.CLIENT_MESSAGE_TYPES))
def test_arbitrary_objects_never_crash(extra: dict, kind: str) -> None:
    try:
        parse_client_message(json.dumps({**extra, "type": kind}))
    except ProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_MESSAGE


def test_server_messages() -> None:
    est = protocol.connection_established("abc")
    assert est["type"] == "connection_established" and est["session_id"] == "abc"
    assert est["status"] == "connected" and est["version"]
    assert protocol.answer("v=0") == {"type": "answer", "sdp": "v=0"}
    assert protocol.error("no_offer", "m") == {"type": "error", "code": "no_offer",
                                               "message": "m", "fatal": False}
    assert protocol.status("connected", "idle")["processing_status"] == "idle"
    assert protocol.pong(1.0, 2.0) == {"type": "pong", "timestamp": 1.0, "server_time": 2.0}
    cand = protocol.ice_candidate("candidate:1", "0", 0)
    assert cand["candidate"]["sdpMLineIndex"] == 0
