"""A reply's prompt waits while another session's reply is a few tokens from its first words
(pipeline/pace.py, ``pipeline.give_way_to_first_words_ms``), model-free."""

from __future__ import annotations

import asyncio

from tests.helpers.fakes import FakeLLM, FakeTTS, Script, words
from voice_agent.core.activity import Activity
from voice_agent.core.config import V3Config
from voice_agent.core.recovery import recovery_from_config
from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.pace import Pace
from voice_agent.pipeline.reply import ReplySpeaker, ReplyState
from voice_agent.pipeline.sink import BufferSink
from voice_agent.services.base import ChatMessage


async def test_alone_a_prompt_never_waits() -> None:
    assert await Pace(Activity(), "a").give_way(1.0) == 0.0
    assert await Pace(None).give_way(1.0) == 0.0


async def test_a_prompt_waits_for_another_sessions_first_piece_only() -> None:
    activity = Activity()
    close, mine, other = Pace(activity, "a"), Pace(activity, "b"), Pace(activity, "a")
    with close.silent_until():
        close.first_token()
        assert activity.close_replies() == 1
        assert await other.give_way(1.0) == 0.0  # its own session's: no wait
        waiting = asyncio.create_task(mine.give_way(5.0))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        close.first_piece()
        async with asyncio.timeout(1.0):
            waited = await waiting
        assert 0.1 <= waited < 1.0
        close.first_token()
    assert activity.close_replies() == 0  # a reply that ends is never waited for


async def test_the_wait_is_bounded() -> None:
    activity = Activity()
    stuck, mine = Pace(activity, "a"), Pace(activity, "b")
    with stuck.silent_until():
        stuck.first_token()
        async with asyncio.timeout(1.0):
            waited = await mine.give_way(0.15)
    assert 0.15 <= waited < 0.5


def _speaker(llm: FakeLLM, activity: Activity, session: str, give_way_s: float) -> ReplySpeaker:
    return ReplySpeaker(llm, FakeTTS(), BufferSink(), _nothing,
                        recovery_from_config(V3Config().recovery), max_tokens=100,
                        timeout_s=5.0, first_piece_max_words=3, conversation=session,
                        activity=activity, give_way_s=give_way_s)


def _run(speaker: ReplySpeaker, state: ReplyState, metrics: TurnMetrics) -> asyncio.Task[None]:
    gate = asyncio.Event()
    gate.set()
    return asyncio.create_task(speaker.run([ChatMessage("user", "q")], state, metrics,
                                           on_first_audio=_first, gate=gate))


async def test_a_reply_starts_once_the_close_one_has_its_first_piece() -> None:
    """Session a's reply has its first token; b's question must not be read into the model
    beside the few tokens a's listener waits for."""
    activity = Activity()
    llm_a = FakeLLM(scripts=[Script(words("The capital of France is Paris."), hold_after=1)])
    llm_b = FakeLLM()
    state_a, state_b = ReplyState(), ReplyState()
    metrics_b = TurnMetrics(turn=1)
    run_a = _run(_speaker(llm_a, activity, "a", 1.0), state_a, TurnMetrics(turn=1))
    async with asyncio.timeout(2.0):
        while not activity.close_replies():
            await asyncio.sleep(0.01)
    run_b = _run(_speaker(llm_b, activity, "b", 5.0), state_b, metrics_b)
    await asyncio.sleep(0.2)
    assert llm_b.calls == []  # b's prompt waits
    llm_a.release.set()
    async with asyncio.timeout(3.0):
        await asyncio.gather(run_a, run_b)
    assert state_a.text == "The capital of France is Paris."
    assert state_b.text == "You asked: q."
    assert 200 <= metrics_b.gave_way_ms < 3000
    assert metrics_b.as_dict()["gave_way_ms"] == round(metrics_b.gave_way_ms, 1)
    assert activity.close_replies() == 0


async def test_off_a_reply_never_waits() -> None:
    activity = Activity()
    llm_a = FakeLLM(scripts=[Script(words("The capital of France is Paris."), hold_after=1)])
    llm_b = FakeLLM()
    state_b, metrics_b = ReplyState(), TurnMetrics(turn=1)
    run_a = _run(_speaker(llm_a, activity, "a", 0.0), ReplyState(), TurnMetrics(turn=1))
    async with asyncio.timeout(2.0):
        while not activity.close_replies():
            await asyncio.sleep(0.01)
    async with asyncio.timeout(2.0):
        await _run(_speaker(llm_b, activity, "b", 0.0), state_b, metrics_b)
    assert state_b.text == "You asked: q." and metrics_b.gave_way_ms == 0.0
    run_a.cancel()
    await asyncio.gather(run_a, return_exceptions=True)
    assert activity.close_replies() == 0  # a cut reply leaves the count


async def _nothing(_event: object) -> None:
    pass


async def _first() -> None:
    pass
