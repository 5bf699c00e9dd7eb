"""A reply ahead of its listener stops writing while another waits in silence (pipeline/pace.py)."""

from __future__ import annotations

import asyncio

from voice_agent.core.activity import Activity
from voice_agent.pipeline.pace import AHEAD_S, RESUME_S, Pace


def test_a_reply_alone_never_yields() -> None:
    pace = Pace(Activity())
    with pace.silent_until() as audible:
        audible()
        assert not pace.should_yield(has_audio=True, held=False, queued_s=10.0)


def test_it_yields_only_with_audio_queued_ahead_while_another_is_silent() -> None:
    activity = Activity()
    ahead, waiting = Pace(activity), Pace(activity)
    with ahead.silent_until() as audible, waiting.silent_until():
        # Without audio of its own it never yields: its listener waits too.
        assert not ahead.should_yield(has_audio=False, held=False, queued_s=AHEAD_S)
        audible()
        assert not ahead.should_yield(has_audio=True, held=False, queued_s=AHEAD_S / 2)
        assert ahead.should_yield(has_audio=True, held=False, queued_s=AHEAD_S)
        assert ahead.should_yield(has_audio=True, held=True, queued_s=0.0)  # not heard yet
        # The silent one has nobody else to wait for: the other one has audio.
        assert not waiting.should_yield(has_audio=True, held=False, queued_s=AHEAD_S)
    assert activity.silent_replies() == 0  # both left the count on the way out


async def test_it_writes_again_once_the_other_has_audio_or_its_own_runs_low() -> None:
    activity = Activity()
    ahead, waiting = Pace(activity), Pace(activity)
    queued = [AHEAD_S]
    with waiting.silent_until() as other_audible:
        task = asyncio.create_task(ahead.wait(lambda: queued[0], lambda: False))
        await asyncio.sleep(0.12)
        assert not task.done()
        other_audible()
        async with asyncio.timeout(1.0):
            await task
    with waiting.silent_until():
        task = asyncio.create_task(ahead.wait(lambda: queued[0], lambda: False))
        await asyncio.sleep(0.12)
        assert not task.done()
        queued[0] = RESUME_S / 2  # its own listener is about to run dry
        async with asyncio.timeout(1.0):
            await task
    assert ahead.yields == 2


def test_a_reply_never_waits_for_another_of_its_own_session() -> None:
    """A session hears one reply at a time: its other replies are held or being cut."""
    activity = Activity()
    playing, held_same, other = Pace(activity, "a"), Pace(activity, "a"), Pace(activity, "b")
    with playing.silent_until() as audible, held_same.silent_until():
        audible()
        assert not playing.should_yield(has_audio=True, held=False, queued_s=AHEAD_S * 2)
        with other.silent_until():
            assert playing.should_yield(has_audio=True, held=False, queued_s=AHEAD_S * 2)


def test_a_reply_silent_for_too_long_holds_nobody_back(monkeypatch) -> None:  # noqa: ANN001
    """A reply abandoned after a cut (its task would not stop) stays registered as silent."""
    import voice_agent.core.activity as activity_module

    activity = Activity()
    playing, stuck = Pace(activity, "a"), Pace(activity, "b")
    clock = [100.0]
    monkeypatch.setattr(activity_module.time, "monotonic", lambda: clock[0])
    with playing.silent_until() as audible, stuck.silent_until():
        audible()
        assert playing.should_yield(has_audio=True, held=False, queued_s=AHEAD_S)
        clock[0] += activity_module.STALE_S + 1
        assert not playing.should_yield(has_audio=True, held=False, queued_s=AHEAD_S)
