"""Barge-in over real WebRTC, again and again (issue #12).

An independent client (aiortc on loopback) asks for a long story; once the agent has been
audibly speaking for at least 1.5 s at the client, it speaks a new question over it ("What is
the capital of France?"). The agent must go quiet at the client at once, report the cut reply
(``ai_response`` with ``interrupted: true``), hear the new question (a final ``transcript``),
answer it (a whole final ``ai_response``), listen again and answer a ping; then the session
ends cleanly. Ten times on one server, a fresh session each time; then four barge-ins in one
session.

The bug this guards against: with more than 2 s of the reply queued for sending (a long reply
and a real, paced reader), the reply's speaker waits in ``FrameQueue.play`` for room; the
barge-in's ``sink.clear()`` gives it room and the cancel that follows is swallowed by
``asyncio.wait_for`` (Python 3.11); the speaker then waits for a piece that never comes, and the
session goes deaf: no interrupted ``ai_response``, no transcript, no metrics, no status, ever.
(When the LLM had already finished, the swallowed cancel let the old reply play on instead,
reported whole.) So the new words are spoken when the speaker is most likely waiting for room
(``wait_speaker_blocked``, from the public ``outbound_queued_s``): on this 2-core machine the
1-thread LLM only gets ahead of the voice a few seconds into a reply, and a barge-in at exactly
1.5 s caught the speaker waiting in about 1 try in 10; timed this way, in 8-9 of 10.

Every wait has a bound, so a deaf session fails the test in seconds, never hangs it; each try
is reported (stop time, what was queued, what was heard and answered) and the test fails at the
end with all of them. The server is this module's own, stopped at the module's end with
whatever its sessions left behind (a frozen session's tasks would otherwise hang the test
loop's teardown, as they did on the old code). No reruns: a rerun would pass a test whose
hang shows in only some of its tries.

Timings are the client's own clock: when its microphone track handed the first loud frame of
the new question to aiortc, and the arrival of the agent's last loud frame after that. The
bound (450 ms) includes the server's voice activity detector confirming the speech
(``stt.min_speech_ms``, 160 ms, plus Silero's 32 ms windows) and the audio in flight both ways
(aiortc's receive jitter buffer on the client side included); see AFTER_CONFIRM_S for the
barge-ins whose words the detector confirms late.

The servers here tell long stories (STORYTELLER_PROMPT: the default prompt asks for two short
sentences), speak at VOICE_SPEED 0.8 (so that the LLM gets ahead of the voice, as on a machine
with cores to spare), and stop a reply at 200 tokens instead of the suite's 60.

Runtime on the 2-core dev machine (models already loaded by the session fixture): about 175 s
for the ten sessions (~17 s each), about 85 s for the four barge-ins in one session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.bargein import (STORYTELLER_PROMPT, VOICE_SPEED, SentFrames, last_loud,
                                   lead_trimmed, loud_times, session_ids, speaking_for, speech_span_s,
                                   stop_contained, wait_speaker_blocked, with_voice_of)
from tests.helpers.rtc import wait_for
from tests.helpers.speech import read_wav, speech_wav
from tests.integration.conftest import (Client, RtcClient, RunningServer, connect, make_config,
                                        negotiate, start_server)

# No rerun: a rerun would pass a test whose hang shows up in only some of its tries, which is
# exactly what this test is for.
pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.flaky(reruns=0)]

STORY = "Tell me a long story about a dragon."
SESSIONS = 10
MAX_TOKENS = 200
"""The suite's servers stop a reply at 60 tokens; 200 make sure that the reply is still being
written when the user speaks, and that far more than the sink's 2 s are queued for sending."""
HEARD_BEFORE_BARGE_IN_S = 1.5
STOP_WITHIN_S = 0.45
"""The agent is silent at the client this soon after the new words began (issue #12: 320-400 ms
is what it should be), allowing for the VAD's confirmation time: see AFTER_CONFIRM_S."""
AFTER_CONFIRM_S = 0.15
"""The server's detector needs 160 ms of unbroken speech. Spoken over the agent, "What is the
capital of France?" is confirmed either ~190 ms after it began or, when the run of speech frames
breaks after "What" (it depends on how Silero's 32 ms windows fall), ~370 ms after: about 1 try
in 4, on the old code and the new alike, and then the agent is silent at ~460 ms. So a barge-in
passes if it is silent within STOP_WITHIN_S of the speech, or, when the server confirmed the
speech late (its `listening` status, as the client sees it), within this much of that
confirmation, which itself must come within STOP_WITHIN_S. Measured here: 40-100 ms from the
confirmation to the last loud frame (the flush, what is in flight, aiortc's jitter buffer)."""
BLOCKED_ABOVE_S = 2.5
"""The new words start when the reply's speaker waits in the sink for room (see
``wait_speaker_blocked``) with more than this queued: the sink's cap (2 s) plus the time the
detector takes to confirm the speech (200-400 ms), so that it still waits at the barge-in."""
BLOCKED_WAIT_S = 10.0
"""How long to wait for that after the first 1.5 s heard; then the words come regardless. On a
2-core machine the 1-thread LLM writes barely faster than the voice speaks, and the speaker
only gets ahead of the sink a few seconds into the reply."""
FIRST_AUDIO_TIMEOUT_S = 40.0
INTERRUPTED_TIMEOUT_S = 8.0
"""The cut reply is reported at once (the turn is cancelled at the speech start); past this the
session has gone deaf."""
TRANSCRIPT_TIMEOUT_S = 20.0
ANSWER_TIMEOUT_S = 45.0
ASKS = 3
"""Times a try asks for its story when the reply was over before the new words could be spoken
over it (the 1.5B model now and then tells a short one)."""
ASK_AGAIN = "Tell me a much longer story, please, of at least ten sentences."
SESSION_BOUND_S = 120.0
"""No one try may take longer than this, whatever hangs (the client's own steps included)."""


@pytest.fixture(scope="module")
async def srv(services) -> AsyncIterator[RunningServer]:
    # Room for a session per try: a session that went deaf stays open (that is the bug), and
    # the tries after it must still get in so that the test counts them all.
    baseline = set(asyncio.all_tasks())
    config = make_config(ai={"max_tokens": MAX_TOKENS, "system_prompt": STORYTELLER_PROMPT},
                         voice={"speed": VOICE_SPEED},
                         server={"max_sessions": SESSIONS + 2})
    running = await start_server(config, await with_voice_of(services, config))
    yield running
    await stop_contained(running, baseline)


@pytest.fixture(scope="module")
def utterances(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, int]]:
    folder = tmp_path_factory.mktemp("bargein-speech")
    texts = {"dragon": STORY}
    out = {}
    for key, text in texts.items():
        pcm, rate = read_wav(speech_wav(text, Path(folder) / f"{key}.wav", rate=48000,
                                        pad_before=0.0, pad_after=1.2))
        out[key] = (lead_trimmed(pcm, rate), rate)
    return out


@pytest.fixture(scope="module")
def question(question_pcm) -> tuple[np.ndarray, int]:
    """The suite's spoken question, starting at once."""
    pcm, rate = question_pcm
    return lead_trimmed(pcm, rate), rate


class Deaf(AssertionError):
    """The session stopped answering."""


class NoBargeIn(Exception):
    """The reply was over before the new words could be spoken over it (a short reply): not a
    failure of the agent; the caller asks again."""


async def _arrival(client: Client, start: int, kind: str, **fields: Any) -> float:
    """When (client clock, polled every 5 ms) a message like this arrived, from ``start`` on."""
    while True:
        for m in client.messages[start:]:
            if m.get("type") == kind and all(m.get(k) == v for k, v in fields.items()):
                return time.monotonic()
        await asyncio.sleep(0.005)


async def _wait_speaking(rtc: RtcClient, since: float, label: str) -> None:
    """Until the agent has been audible at the client for HEARD_BEFORE_BARGE_IN_S."""
    rec = rtc.recorder[0]
    deadline = time.monotonic() + FIRST_AUDIO_TIMEOUT_S
    while speaking_for(rec, since) < HEARD_BEFORE_BARGE_IN_S:
        if time.monotonic() > deadline:
            raise AssertionError(f"{label}: the agent did not speak for "
                                 f"{HEARD_BEFORE_BARGE_IN_S} s within {FIRST_AUDIO_TIMEOUT_S} s")
        await asyncio.sleep(0.02)


async def _barge_in(srv: RunningServer, client: Client, rtc: RtcClient, mic: SentFrames,
                    sid: str, pcm: np.ndarray, rate: int, label: str) -> dict[str, Any]:
    """Speak ``pcm`` over the agent; check that it stops, reports the cut reply and hears the new
    words. Returns what was measured and the index of the final transcript."""
    rec = rtc.recorder[0]
    # Speak when the speaker waits in the sink for room: where the cancel used to get lost.
    queued, blocked = await wait_speaker_blocked(srv.http, sid, above_s=BLOCKED_ABOVE_S,
                                                 timeout_s=BLOCKED_WAIT_S)
    out: dict[str, Any] = {"queued_s": queued, "blocked": blocked}
    statuses = [m["processing_status"] for m in client.messages if m.get("type") == "status"]
    if not statuses or statuses[-1] != "speaking":
        whole = [m["text"] for m in client.messages
                 if m.get("type") == "ai_response" and m.get("final")]
        recent = [(m["type"], m.get("processing_status") or m.get("code")
                   or m.get("interrupted")) for m in client.messages[-12:]
                  if not (m["type"] == "ai_response" and not m.get("final"))]
        raise NoBargeIn(f"{label}: the reply was over before the new words (last reply: "
                        f"{whole[-1][:120] if whole else None!r}; last messages: {recent})")
    start = len(client.messages)
    loaded_at = time.monotonic()
    rtc.mic.load(pcm, rate)
    # The server's status `listening` is its barge-in (speech confirmed) as the client sees it.
    confirmed = asyncio.ensure_future(_arrival(client, start, "status",
                                               processing_status="listening"))
    try:
        cut = await client.wait_for(
            lambda m: m.get("type") == "ai_response" and m.get("final")
            and m.get("interrupted") is True, INTERRUPTED_TIMEOUT_S, start)
    except AssertionError as exc:
        confirmed.cancel()
        after = [m.get("type") for m in client.messages[start:]]
        whole = [m for m in client.messages[start:]
                 if m.get("type") == "ai_response" and m.get("final")]
        what = ("the barge-in was ignored: the reply was reported whole" if whole
                else "session went deaf")
        raise Deaf(f"{label}: {what}: no interrupted ai_response within "
                   f"{INTERRUPTED_TIMEOUT_S:g} s of speaking over the reply (outbound queue "
                   f"{out['queued_s']} s); messages since: {after}") from exc
    spoke_at = mic.first_loud_since(loaded_at)
    assert spoke_at is not None, f"{label}: the microphone never sent the speech"
    # The agent cannot answer before the new words end: what is loud until then is the old reply.
    window_end = spoke_at + speech_span_s(pcm, rate)
    await asyncio.sleep(max(0.0, window_end + 0.2 - time.monotonic()))
    last = last_loud(rec, spoke_at, window_end)
    out["stop_ms"] = round(((last - spoke_at) if last is not None else 0.0) * 1000)
    out["confirmed_ms"] = round((confirmed.result() - spoke_at) * 1000) if confirmed.done() \
        else None
    confirmed.cancel()
    out["audible_at_barge_in"] = bool(loud_times(rec, spoke_at - 0.3, spoke_at))
    out["late_loud_frames"] = len(loud_times(rec, spoke_at + STOP_WITHIN_S, window_end))
    out["spoken_text"] = cut.get("spoken_text")
    cut_at = client.messages.index(cut)
    try:
        final = await client.wait_type("transcript", TRANSCRIPT_TIMEOUT_S, cut_at, final=True)
    except AssertionError as exc:
        raise Deaf(f"{label}: no final transcript of the new words within "
                   f"{TRANSCRIPT_TIMEOUT_S:g} s") from exc
    out["transcript"] = final["text"]
    out["transcript_at"] = client.messages.index(final)
    return out


async def _answered(client: Client, start: int, label: str) -> dict[str, Any]:
    try:
        return await client.wait_for(
            lambda m: m.get("type") == "ai_response" and m.get("final")
            and not m.get("interrupted"), ANSWER_TIMEOUT_S, start)
    except AssertionError as exc:
        raise Deaf(f"{label}: the new question got no whole final ai_response within "
                   f"{ANSWER_TIMEOUT_S:g} s; messages since: "
                   f"{[m.get('type') for m in client.messages[start:]]}") from exc


async def _goes_on(client: Client, start: int, label: str) -> None:
    """After the answer: listening again, and answering a ping."""
    await client.wait_type("status", 15, start, processing_status="listening")
    ping_at = len(client.messages)
    await client.send({"type": "ping", "timestamp": 42})
    await client.wait_type("pong", 5, ping_at)


async def _ends(srv: RunningServer, client: Client, sid: str, label: str) -> None:
    await client.send({"type": "end"})
    code = await client.wait_closed(8)
    assert code == 1000, f"{label}: closed with {code}"
    deadline = time.monotonic() + 8
    while sid in await session_ids(srv.http):
        assert time.monotonic() < deadline, f"{label}: the ended session is still listed"
        await asyncio.sleep(0.1)


async def _one_session(srv: RunningServer, question: tuple[np.ndarray, int],
                       n: int) -> dict[str, Any]:
    label = f"session {n}"
    t0 = time.monotonic()
    async with connect(f"{srv.ws}/ws/v3") as client:
        sid = (await client.wait_type("connection_established", 10))["session_id"]
        rtc = await negotiate(client)
        try:
            mic = SentFrames(rtc.mic)
            assert await wait_for(lambda: rtc.recorder and rtc.recorder[0].frames, 5), \
                f"{label}: no audio track from the agent"
            for attempt in range(ASKS):
                asked_at = time.monotonic()
                await client.send({"type": "text", "text": STORY})
                await _wait_speaking(rtc, asked_at, label)
                try:
                    out = await _barge_in(srv, client, rtc, mic, sid, *question, label)
                    break
                except NoBargeIn:
                    if attempt == ASKS - 1:
                        raise
            answer = await _answered(client, out["transcript_at"], label)
            out["answer"] = answer["text"]
            await _goes_on(client, client.messages.index(answer), label)
            await _ends(srv, client, sid, label)
        finally:
            await rtc.close()
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def _report(rows: list[tuple[str, dict[str, Any] | str]]) -> str:
    lines = []
    for label, row in rows:
        if isinstance(row, str):
            lines.append(f"{label}: FAILED {row}")
        else:
            lines.append(f"{label}: stop {row['stop_ms']} ms (server confirmed the speech at "
                         f"{row['confirmed_ms']} ms), queued {row['queued_s']} s"
                         f"{'' if row['blocked'] else ' (speaker not seen blocked)'}, "
                         f"heard {row['transcript']!r}, answer {row.get('answer', '')[:60]!r}, "
                         f"{row.get('seconds', '')} s")
    return "\n".join(lines)


def _check_stops(rows: list[tuple[str, dict[str, Any] | str]], report: str) -> None:
    measured = [(label, row) for label, row in rows if isinstance(row, dict)]
    audible = [label for label, row in measured if row["audible_at_barge_in"]]
    # A reply can run dry for a moment (the LLM behind): the stop time of a barge-in made in
    # such a gap says nothing, but most must have been made over the voice.
    assert len(audible) * 2 >= len(measured), f"the agent was audible at only {len(audible)} " \
                                              f"of {len(measured)} barge-ins\n{report}"
    for label, row in measured:
        stop, confirmed = row["stop_ms"] / 1000, row["confirmed_ms"]
        if stop <= STOP_WITHIN_S:
            continue
        assert confirmed is not None and confirmed / 1000 <= STOP_WITHIN_S, \
            f"{label}: the server noticed the speech only after {confirmed} ms\n{report}"
        assert stop - confirmed / 1000 <= AFTER_CONFIRM_S, \
            f"{label}: the agent was still audible {stop * 1000:.0f} ms after the new words " \
            f"began, {stop * 1000 - confirmed:.0f} ms after the server noticed them\n{report}"


async def test_ten_barge_ins_on_one_server_each_in_a_fresh_session(srv: RunningServer,
                                                                   question) -> None:
    rows: list[tuple[str, dict[str, Any] | str]] = []
    for n in range(1, SESSIONS + 1):
        try:
            async with asyncio.timeout(SESSION_BOUND_S):
                rows.append((f"session {n}", await _one_session(srv, question, n)))
        except Exception as exc:  # a deaf session must not hide how the others went
            rows.append((f"session {n}", f"{type(exc).__name__}: {exc}".splitlines()[0][:400]))
        print(_report(rows[-1:]), flush=True)
    report = _report(rows)
    print("\n" + report)
    failed = [label for label, row in rows if isinstance(row, str)]
    assert not failed, f"{len(failed)} of {SESSIONS} sessions failed:\n{report}"
    _check_stops(rows, report)
    for label, row in rows:
        assert not isinstance(row, str)
        assert any(w in row["transcript"].lower() for w in ("capital", "france")), (label, row)
    # The answer itself is the model's: most of them name Paris (the story before it can
    # distract a 1.5B model), and every one is a whole, uninterrupted reply (checked above).
    paris = sum("paris" in str(row["answer"]).lower() for _, row in rows if isinstance(row, dict))
    assert paris >= SESSIONS - 2, f"only {paris} of {SESSIONS} answers name Paris\n{report}"


async def test_several_barge_ins_in_one_session(srv: RunningServer, question,
                                                utterances) -> None:
    """One session, four times: a long story asked for (spoken the first time, typed after),
    the question spoken over it, the answer; every barge-in is checked as above."""
    rows: list[tuple[str, dict[str, Any] | str]] = []
    stories = [None, "Tell me a long story about a robot, in ten sentences.",
               "Tell me a long story about a pirate, in ten sentences.",
               "Tell me a long story about a wizard, in ten sentences."]
    async with asyncio.timeout(SESSION_BOUND_S * 3), connect(f"{srv.ws}/ws/v3") as client:
        sid = (await client.wait_type("connection_established", 10))["session_id"]
        rtc = await negotiate(client)
        try:
            mic = SentFrames(rtc.mic)
            assert await wait_for(lambda: rtc.recorder and rtc.recorder[0].frames, 5)
            for n, story in enumerate(stories, 1):
                label = f"barge-in {n}"
                start = len(client.messages)
                asked_at = time.monotonic()
                if story is None:  # spoken, while the agent is quiet
                    rtc.mic.load(*utterances["dragon"])
                    heard = await client.wait_type("transcript", TRANSCRIPT_TIMEOUT_S, start,
                                                   final=True)
                    assert "story" in heard["text"].lower(), heard
                else:
                    await client.send({"type": "text", "text": story})
                try:
                    for attempt in range(ASKS):
                        await _wait_speaking(rtc, asked_at, label)
                        try:
                            out = await _barge_in(srv, client, rtc, mic, sid, *question, label)
                            break
                        except NoBargeIn:
                            if attempt == ASKS - 1:
                                raise
                            asked_at = time.monotonic()
                            await client.send({"type": "text", "text": ASK_AGAIN})
                    answer = await _answered(client, out["transcript_at"], label)
                    out["answer"] = answer["text"]
                    await _goes_on(client, client.messages.index(answer), label)
                except Deaf as exc:
                    rows.append((label, str(exc)))
                    break
                rows.append((label, out))
                print(_report(rows[-1:]), flush=True)
            else:
                await _ends(srv, client, sid, "the session")
        finally:
            await rtc.close()
    report = _report(rows)
    print("\n" + report)
    failed = [label for label, row in rows if isinstance(row, str)]
    assert not failed, f"barge-in failed:\n{report}"
    _check_stops(rows, report)
    for label, row in rows:
        assert not isinstance(row, str)
        assert any(w in row["transcript"].lower() for w in ("capital", "france")), (label, row)
