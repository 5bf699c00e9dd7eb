"""End to end over real WebRTC on loopback: speech in, transcript, reply text and voice out."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack

from voice_agent.pipeline.metrics import STAGES
from tests.helpers.rtc import PcmPlayerTrack, new_peer, rms, wait_for
from tests.integration.conftest import (RtcClient, RunningServer, connect, negotiate,
                                        speech_only, to_16k_float)

pytestmark = pytest.mark.models


async def test_spoken_question_gets_a_spoken_answer(server: RunningServer, services,
                                                    question_pcm) -> None:
    async with connect(f"{server.ws}/ws/v3") as client:
        hello = await client.wait_type("connection_established")
        assert hello["status"] == "connected" and hello["session_id"] and hello["version"]
        assert client.messages[0]["type"] == "connection_established"
        rtc = await negotiate(client)
        try:
            assert await wait_for(lambda: rtc.recorder and rtc.recorder[0].frames, 5)
            await client.wait_type("status", 5, connection_status="connected")
            pcm, rate = question_pcm
            t_sent = time.monotonic()
            rtc.mic.load(pcm, rate)
            final = await client.wait_type("transcript", 30, final=True)
            assert "capital" in final["text"].lower(), final
            reply = await client.wait_type("ai_response", 60, final=True)
            assert "paris" in reply["text"].lower()
            after_reply = client.messages.index(reply)
            metrics = await client.wait_type("metrics", 30, after_reply)
            # Every stage of the turn is timed, the transport's first frame included.
            for stage in STAGES:
                assert metrics[f"at_{stage}_ms"] is not None, (stage, metrics)
            assert metrics["end_of_speech_to_first_audio_ms"] > 0
            prom = await _get_text(server, "/v3/metrics")
            assert 'voice_agent_turn_stage_seconds_count{stage="end_of_speech_to_first_audio"}' in prom
            await client.wait_type("status", 30, after_reply, processing_status="listening")
            await asyncio.sleep(0.3)  # the last frames are still on the wire
            heard = rtc.recorder[0].audio(since=t_sent)
            voice = speech_only(heard, 48000)
            assert len(voice) > 0.5 * 48000 and rms(voice) > 0.02, "agent audio is silent"
            text = (await asyncio.to_thread(services.stt.transcribe_full_sync, to_16k_float(voice))).text.lower()
            assert "paris" in text, text
            stats = (await _get_json(server, "/v3/webrtc/stats"))["sessions"][hello["session_id"]]
            assert stats["audio_packets_sent"] > 50 and stats["audio_packets_received"] > 50
            assert stats["connection_state"] == "connected" and stats["inbound_audio_s"] > 1
            # The question above was heard through the server's short receive buffer.
            assert stats["receive_buffer_frames"] == 1
        finally:
            await rtc.close()


async def test_interrupt_silences_the_agent_quickly(server: RunningServer) -> None:
    async with connect(f"{server.ws}/ws/v3") as client:
        await client.wait_type("connection_established")
        rtc = await negotiate(client)
        try:
            assert await wait_for(lambda: rtc.recorder and rtc.recorder[0].frames, 5)
            rec = rtc.recorder[0]
            await client.send({"type": "text",
                               "text": "Tell me a long story about a brave knight and a dragon."})
            await client.wait_type("status", 60, processing_status="speaking")
            assert await wait_for(lambda: rms(rec.audio(since=time.monotonic() - 0.2)) > 0.01, 10)
            await client.send({"type": "interrupt"})
            sent_at = time.monotonic()
            reply = await client.wait_for(
                lambda m: m.get("type") == "ai_response" and m.get("final"), 10)
            assert reply.get("interrupted") is True
            await asyncio.sleep(1.0)
            # Jitter buffer and decoder hold < 250 ms: after that the agent is silent.
            assert rms(rec.audio(since=sent_at + 0.3)) < 0.005
            await client.wait_type("status", 10, processing_status="listening")
        finally:
            await rtc.close()


async def test_text_over_the_data_channel(server_factory) -> None:
    srv = await server_factory(webrtc={"mode": "data_channel"})
    async with connect(f"{srv.ws}/ws/v3") as client:
        hello = await client.wait_type("connection_established")
        assert hello["mode"] == "data_channel"
        rtc = await negotiate(client, data_channel=True)
        try:
            rtc.channel.send('{"type":"ping","timestamp":1.5}')
            assert await wait_for(lambda: any(m["type"] == "pong" and m["timestamp"] == 1.5
                                              for m in rtc.channel_messages), 5)
            rtc.channel.send('{"type":"text","text":"What is the capital of France?"}')

            def final_reply() -> bool:
                return any(m["type"] == "ai_response" and m.get("final")
                           for m in rtc.channel_messages)

            assert await wait_for(final_reply, 60)
            kinds = [m["type"] for m in rtc.channel_messages]
            assert "transcript" in kinds and "status" in kinds
            reply = next(m for m in rtc.channel_messages
                         if m["type"] == "ai_response" and m.get("final"))
            assert "paris" in reply["text"].lower()
            # The same events were sent over signaling too (mirrored), with the same seq.
            assert await client.wait_type("ai_response", 5, final=True) == reply
            rtc.channel.send("{broken")
            assert await wait_for(lambda: any(m["type"] == "error" and m["code"] == "invalid_json"
                                              for m in rtc.channel_messages), 5)
            rtc.channel.send('{"type":"offer","sdp":"v=0"}')
            assert await wait_for(lambda: any(m["type"] == "error" and m["code"] == "unsupported"
                                              for m in rtc.channel_messages), 5)
            # One counter for the session: rising on each channel; the data channel's own
            # replies (pong, errors) are numbers the signaling socket never sees.
            ws_seqs = [m["seq"] for m in client.messages]
            dc_seqs = [m["seq"] for m in rtc.channel_messages]
            assert hello["seq"] == 1
            assert ws_seqs == sorted(set(ws_seqs)) and dc_seqs == sorted(set(dc_seqs))
            own = [m["seq"] for m in rtc.channel_messages if m["type"] in ("pong", "error")]
            assert len(own) == 3 and not set(own) & set(ws_seqs)
        finally:
            await rtc.close()


async def test_twenty_sessions_leave_nothing_behind(server: RunningServer) -> None:
    registry = server.registry
    await wait_for(lambda: len(registry.sessions) == 0, 5)
    gc.collect()
    baseline = {t for t in asyncio.all_tasks() if not t.done()}
    for i in range(20):
        async with connect(f"{server.ws}/ws/v3") as client:
            await client.wait_type("connection_established")
            rtc = await negotiate(client, data_channel=(i % 2 == 0))
            if i % 3 == 0:
                await client.send({"type": "end"})
                assert await client.wait_closed() == 1000
            await rtc.close()
    assert await wait_for(lambda: len(registry.sessions) == 0, 5)
    assert await _get_json(server, "/v3/sessions") == []

    def leftovers() -> list[asyncio.Task]:
        current = asyncio.current_task()
        return [t for t in asyncio.all_tasks()
                if not t.done() and t not in baseline and t is not current]

    await wait_for(lambda: not leftovers(), 5)
    assert not leftovers(), [repr(t) for t in leftovers()][:5]
    gc.collect()
    open_pcs = [o for o in gc.get_objects()
                if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"]
    assert not open_pcs


async def _get_json(server: RunningServer, path: str):
    import httpx

    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get(path)
        response.raise_for_status()
        return response.json()


async def test_audio_video_mode_counts_and_discards_video(server_factory) -> None:
    srv = await server_factory(webrtc={"mode": "audio_video"})
    async with connect(f"{srv.ws}/ws/v3") as client:
        hello = await client.wait_type("connection_established")
        assert hello["mode"] == "audio_video"
        pc = new_peer()
        rtc = RtcClient(pc, PcmPlayerTrack(), [])
        pc.addTrack(rtc.mic)
        pc.addTrack(VideoStreamTrack())
        try:
            await pc.setLocalDescription(await pc.createOffer())
            await client.send({"type": "offer", "sdp": pc.localDescription.sdp})
            answer = await client.wait_type("answer", 10)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

            async def video_frames() -> int:
                stats = (await _get_json(srv, "/v3/webrtc/stats"))["sessions"]
                return stats[hello["session_id"]]["video_frames_received"]

            for _ in range(100):
                if await video_frames() > 5:
                    break
                await asyncio.sleep(0.1)
            assert await video_frames() > 5
            await client.send({"type": "ping"})
            await client.wait_type("pong")
        finally:
            await rtc.close()


async def _get_text(server: RunningServer, path: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get(path)
        response.raise_for_status()
        return response.text


async def test_lost_media_connection_is_reported_on_the_signaling_socket(
        server: RunningServer) -> None:
    """The media path can die while the signaling socket lives on (aioice closes a connection
    whose consent checks go unanswered; a peer goes away). The client must be told, not be left
    talking to a session that can no longer hear it."""
    async with connect(f"{server.ws}/ws/v3") as client:
        hello = await client.wait_type("connection_established")
        rtc = await negotiate(client)
        await rtc.close()  # media gone (DTLS close), signaling still open
        error = await client.wait_type("error", 10, code="transport_failed")
        assert error["fatal"] is False
        assert "connect again" in error["message"]
        await client.send({"type": "ping", "timestamp": 2.0})
        assert (await client.wait_type("pong", 5))["timestamp"] == 2.0
        sessions = await _get_json(server, "/v3/sessions")
        mine = [s for s in sessions if s["session_id"] == hello["session_id"]]
        assert [s["connection_status"] for s in mine] == ["disconnected"]
