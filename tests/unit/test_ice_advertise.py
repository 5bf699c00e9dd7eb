"""webrtc.advertised_address: the answer's host candidates carry it (transport/ice.py), on SDP
that aiortc itself wrote."""

from __future__ import annotations

import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from voice_agent.core.config import V3Config
from voice_agent.transport.ice import advertise_host_candidates, restrict_host_addresses
from voice_agent.transport.webrtc import WebRTCSession

PUBLIC = "203.0.113.7"
CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d) (\S+) (\d+) (\S+) (\d+) typ (\S+)", re.M)


async def aiortc_answer(addresses: list[str]) -> str:
    """A real answer: an offer with audio and a data channel, answered by aiortc, whose ICE
    offers ``addresses`` (made up ones are fine: nothing connects)."""
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        offerer.addTransceiver("audio")
        offerer.createDataChannel("events")
        await offerer.setLocalDescription(await offerer.createOffer())
        with restrict_host_addresses(addresses):
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
        return answerer.localDescription.sdp
    finally:
        await offerer.close()
        await answerer.close()


def candidates(sdp: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in CANDIDATE.finditer(sdp.replace("\r\n", "\n"))]


async def test_host_candidates_carry_the_advertised_address_and_keep_their_ports() -> None:
    sdp = await aiortc_answer(["127.0.0.1", "::1"])
    before = candidates(sdp)
    assert {c[4] for c in before} == {"127.0.0.1", "::1"}
    assert all(c[6] == "host" for c in before)

    out = advertise_host_candidates(sdp, PUBLIC)
    after = candidates(out)
    assert len(after) == len(before)  # every m-line keeps its candidates (BUNDLE repeats them)
    for old, new in zip(before, after):
        if old[4] == "127.0.0.1":
            # Same foundation, component, transport, priority, port and type; new address.
            assert new == (*old[:4], PUBLIC, *old[5:])
        else:
            assert new == old  # the IPv6 one is another family: left alone
    assert "127.0.0.1" not in out
    assert f"c=IN IP4 {PUBLIC}" in out
    assert out.count("\r\n") == sdp.count("\r\n")  # aiortc's line endings kept

    # Still SDP aiortc (and so a browser) reads, the candidates parsed with the new address.
    parsed = SessionDescription.parse(out)
    assert {c.ip for m in parsed.media for c in m.ice_candidates} == {PUBLIC, "::1"}
    assert {c.port for m in parsed.media for c in m.ice_candidates} == {int(c[5]) for c in before}


async def test_an_ipv6_advertised_address_replaces_only_ipv6_candidates() -> None:
    sdp = await aiortc_answer(["127.0.0.1", "::1"])
    out = advertise_host_candidates(sdp, "[2001:db8::5]")
    hosts = {c[4] for c in candidates(out)}
    assert hosts == {"127.0.0.1", "2001:db8::5"}


async def test_no_advertised_address_leaves_the_answer_as_it_is() -> None:
    sdp = await aiortc_answer(["127.0.0.1"])
    assert advertise_host_candidates(sdp, None) == sdp
    assert advertise_host_candidates(sdp, "") == sdp


def test_other_candidate_types_are_not_touched() -> None:
    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 198.51.100.1\r\n"
           "a=candidate:1 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.2 rport 40000\r\n"
           "a=candidate:2 1 udp 2130706431 10.0.0.2 40000 typ host\r\n"
           "a=candidate:3 1 udp 2130706431 abcd.local 40001 typ host\r\n")
    out = advertise_host_candidates(sdp, PUBLIC)
    assert "198.51.100.1 40000 typ srflx raddr 10.0.0.2 rport 40000" in out
    assert f"a=candidate:2 1 udp 2130706431 {PUBLIC} 40000 typ host" in out
    assert "abcd.local 40001 typ host" in out  # an mDNS name is left to the browser
    assert "c=IN IP4 198.51.100.1" in out  # it named the srflx address, not a replaced one


def test_a_name_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="advertised_address"):
        advertise_host_candidates("v=0\r\n", "voice.example.com")


async def test_the_session_answer_carries_the_advertised_address() -> None:
    # The call site: WebRTCSession.handle_offer answers with the rewritten SDP.
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    offerer.addTransceiver("audio")
    await offerer.setLocalDescription(await offerer.createOffer())

    async def ignore(*_: object) -> None:
        return None

    config = V3Config(webrtc={"advertised_address": PUBLIC})
    session = WebRTCSession("s1", config, push_audio=lambda *_: None, on_message=ignore,
                            on_state=ignore)
    try:
        with restrict_host_addresses(["127.0.0.1"]):
            answer = await session.handle_offer(offerer.localDescription.sdp)
        assert {c[4] for c in candidates(answer)} == {PUBLIC}
        # The offerer takes it as any answer.
        await offerer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    finally:
        await session.close()
        await offerer.close()
