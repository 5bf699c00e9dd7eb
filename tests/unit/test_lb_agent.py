"""HAProxy's agent check: the line a worker answers for each state and load (server/lb_agent.py)."""

from __future__ import annotations

import asyncio
import re

import pytest

from voice_agent.core.config import V3Config
from voice_agent.server.app import create_app
from voice_agent.server.lb_agent import (LoadBalancerAgent, WorkerState, agent_reply,
                                         registry_state)
from voice_agent.server.registry import get_registry

# HAProxy 2.6 reads words separated by spaces, tabs or commas: a percentage, ready, drain,
# maint, down, fail, stopped, up, maxconn:N; down/fail/stopped may carry "#reason" to the end.
AGENT_LINE = re.compile(r"^((up|ready|drain|\d{1,3}%)( (up|ready|drain|\d{1,3}%))*"
                        r"|down #[ -~]+)\n$")


@pytest.mark.parametrize(("active", "capacity", "line"), [
    (0, 2, "up ready 100%\n"),
    (1, 2, "up ready 50%\n"),
    (1, 4, "up ready 75%\n"),
    (3, 4, "up ready 25%\n"),
    (2, 3, "up ready 33%\n"),  # load 0.667 -> 33%
    (2, 2, "up drain\n"),      # full: nobody new, the open sessions stay
    (5, 4, "up drain\n"),      # the capacity was lowered below the open sessions
])
def test_weight_is_the_free_share_of_the_capacity(active: int, capacity: int, line: str) -> None:
    reply = agent_reply(WorkerState(active=active, capacity=capacity, ready=True))
    assert reply == line
    assert AGENT_LINE.match(reply)


def test_a_free_slot_never_rounds_to_a_zero_weight() -> None:
    # 0% would drain the worker while it still has room: 199 of 200 taken is 1%, not 0%.
    assert agent_reply(WorkerState(active=199, capacity=200, ready=True)) == "up ready 1%\n"


def test_not_ready_is_down_whatever_the_load() -> None:
    for active in (0, 1, 2):
        reply = agent_reply(WorkerState(active=active, capacity=2, ready=False))
        assert reply == "down #models loading\n"
        assert AGENT_LINE.match(reply)


def test_stopping_drains_before_the_models_go() -> None:
    assert agent_reply(WorkerState(active=1, capacity=2, ready=True, stopping=True)) == "drain\n"
    # Once the lifespan has closed the models, down wins.
    assert agent_reply(WorkerState(0, 2, ready=False, stopping=True)) == "down #models loading\n"


def test_registry_state_reads_the_figures_health_reports() -> None:
    app = create_app(V3Config(server={"max_sessions": 4}))
    registry = get_registry(app)
    state = registry_state(registry)
    assert state() == WorkerState(active=0, capacity=4, ready=False)
    registry.services_ready = True
    registry.sessions.create()
    assert state() == WorkerState(active=1, capacity=4, ready=True)
    assert agent_reply(state()) == "up ready 75%\n"
    registry.load_error = "RuntimeError: no model"
    assert not state().ready


async def test_agent_answers_each_connection_with_the_current_line() -> None:
    states = [WorkerState(0, 2, ready=True), WorkerState(1, 2, ready=True)]
    agent = LoadBalancerAgent(lambda: states[0], "127.0.0.1", 0)
    await agent.start()
    try:
        lines = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", agent.bound_port)
            lines.append(await reader.read())  # the agent closes after its line
            writer.close()
            states.append(states.pop(0))
        assert lines == [b"up ready 100%\n", b"up ready 50%\n"]
        agent.stopping = True
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.bound_port)
        assert await reader.read() == b"drain\n"
        writer.close()
        assert agent.answered == 3
    finally:
        await agent.stop()


async def test_a_failing_state_source_closes_the_connection_and_the_agent_goes_on() -> None:
    calls = [0]

    def state() -> WorkerState:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("boom")
        return WorkerState(0, 1, ready=True)

    agent = LoadBalancerAgent(state, "127.0.0.1", 0)
    await agent.start()
    try:
        for expected in (b"", b"up ready 100%\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", agent.bound_port)
            assert await reader.read() == expected
            writer.close()
    finally:
        await agent.stop()
