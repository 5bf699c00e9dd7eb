"""Several sessions in a turn at once: each keeps to what its reply needs (issue #15 item 3).

The models are shared. While another session is in a turn, a speaking user's words get no
end-of-turn score, no prefill and no early reply before their pause; the pause's transcript
and its score still decide the end of the turn. Alone again, the comfort comes back.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.fakes import fake_services, speech
from tests.helpers.turn_suite import Turns, answer
from tests.helpers.turns import config
from voice_agent.pipeline.turn import TurnState


def complete(text: str) -> float:
    return 0.01 if text.endswith((" of", " the")) else 0.9


async def test_while_another_session_is_in_a_turn_nothing_is_spent_before_the_pause() -> None:
    services = fake_services()
    services.llm.end_of_turn = complete  # type: ignore[attr-defined]
    async with Turns(services=services, session_id="a") as a, \
            Turns(services=services, session_id="b") as b:
        await a.push(speech("tell me a story"))  # a is in a turn (speaking)
        assert services.activity.busy == 1
        await b.push(speech("what time is it"))
        await b.interim()
        assert b.state is TurnState.USER_SPEAKING
        assert b.llm.scored == [] and b.llm.prefills == [] and b.llm.calls == []
        await b.quiet(350)  # the pause's transcript is still scored: a short end
        await b.answered()
        assert b.answers() == [answer("what time is it")]
        assert b.llm.scored == ["what time is it"]
        assert b.metrics()[0]["preemptive"] is False


async def test_alone_again_the_early_reply_comes_back() -> None:
    services = fake_services()
    services.llm.end_of_turn = complete  # type: ignore[attr-defined]
    base = config()
    early = base.model_copy(update={"pipeline": base.pipeline.model_copy(
        update={"preemptive_reply": True})})
    async with Turns(early, services=services, session_id="a") as a, \
            Turns(early, services=services, session_id="b") as b:
        await a.say("hello there")
        await a.answered()
        assert a.state is TurnState.LISTENING and services.activity.busy == 0
        scored = len(b.llm.scored)  # a's pause was scored too
        await b.push(speech("what time is it"))
        await b.interim()
        assert b.llm.scored[scored:] == ["what time is it"]
        await b.until_held()  # an early reply, as for a session alone
        await b.quiet(350)
        await b.answered()
        assert b.metrics()[0]["preemptive"] is True


async def test_a_closed_session_is_no_longer_counted() -> None:
    services = fake_services()
    async with Turns(services=services, session_id="a") as a:
        await a.push(speech("tell me a story"))
        assert services.activity.busy == 1
    assert services.activity.busy == 0


@pytest.mark.parametrize("others", [True, False])
async def test_a_pause_transcription_still_waiting_is_withdrawn_when_the_user_goes_on(
        others: bool) -> None:
    """Under load 13 of 53 Whisper passes were pauses inside a question, unread: one that has
    not started when the user speaks again leaves the model's queue. Alone it is kept (its words
    are scored and prefilled while the user speaks)."""
    async with Turns() as h:
        h.services.activity.set_busy("another session", others)
        h.stt.hold = asyncio.Event()  # the model is busy with other sessions' transcripts
        await h.say("what is", end=False)
        await h.quiet(200)  # a pause: its transcription waits
        assert h.stt.running == 1
        await h.say("the time", end=False)  # the user goes on
        await h.settle()
        assert h.stt.running == (0 if others else 1)
        h.stt.hold.set()
        await h.quiet_until_the_turn_ends()
        await h.answered()
        assert h.finals() == ["what is the time"]
        assert (("what is", True) in h.stt.calls) is not others
        h.services.activity.set_busy("another session", False)
