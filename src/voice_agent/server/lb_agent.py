"""HAProxy's agent check: this worker tells the load balancer how much of it is free.

Why an agent and not the HTTP health check alone: ``option httpchk`` only says up or down, while
a worker with one of two slots taken should get half the new conversations of an idle one.
HAProxy's ``agent-check`` connects to a TCP port every ``agent-inter`` and reads one line back;
a percentage in it scales the server's configured ``weight``, and the words ``ready``, ``drain``,
``down`` and ``up`` set its state (HAProxy 2.6 configuration manual, 5.2, ``agent-check``). The
line is built from the same figure /v3/health reports as ``load`` (capacity.py: open sessions /
``server.max_sessions``, 1 while the models load or failed):

==========================  =====================================  ==========================
worker                      line                                   what HAProxy does
==========================  =====================================  ==========================
models loading or failed    ``down #models loading``               no traffic at all
shutting down               ``drain``                              no new sessions; open ones
                                                                   stay (their sockets do)
full (load 1)               ``up drain``                           no new sessions
load 0 .. <1                ``up ready 100%`` .. ``up ready 1%``   weight = (1 - load) x weight
==========================  =====================================  ==========================

``ready`` and ``up`` come back in every healthy line because ``drain`` and ``down`` stay until
cancelled. A weight never rounds to 0% while a slot is free (0% would drain it). HAProxy scales
the percentage of the server's *configured* weight, so the servers need ``weight 100``: with
HAProxy's default weight of 1, 50% would round to 0 (deploy/haproxy.cfg).

Sessions stay where they are whatever the weight: the signaling WebSocket is one TCP
connection through HAProxy to the worker that holds the peer connection, and a weight only
steers new connections.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .capacity import server_load

if TYPE_CHECKING:
    from .registry import AppRegistry

log = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 2.0
"""A check that does not take its line in this long is dropped (HAProxy's own agent timeout is
``timeout check``, a few seconds); a stuck peer must not hold a task forever."""


@dataclass(frozen=True)
class WorkerState:
    """What the agent's line is made from: one snapshot of the worker."""

    active: int
    capacity: int
    ready: bool
    """Models loaded and warmed up, and no load error: sessions are accepted."""
    stopping: bool = False


class StateSource(Protocol):
    def __call__(self) -> WorkerState: ...


def agent_reply(state: WorkerState) -> str:
    """The one line (newline included) HAProxy reads; see the module's table."""
    if not state.ready:
        return "down #models loading\n"
    if state.stopping:
        return "drain\n"
    load = server_load(state.active, state.capacity)
    if load >= 1.0:
        return "up drain\n"
    percent = max(1, min(100, round((1.0 - load) * 100)))
    return f"up ready {percent}%\n"


def registry_state(registry: AppRegistry) -> StateSource:
    """A state source reading the app's registry at each check (nothing is cached: the line is
    the worker's state when HAProxy asks), with the figures /v3/health's ``load`` uses."""

    def state() -> WorkerState:
        return WorkerState(active=len(registry.sessions),
                           capacity=registry.sessions.max_sessions,
                           ready=registry.services_ready and not registry.load_error)
    return state


class LoadBalancerAgent:
    """A TCP server answering every connection with :func:`agent_reply` and closing it.

    It reads nothing: HAProxy may send an ``agent-send`` string first, which changes nothing
    here, and waiting for it would only delay the answer.
    """

    def __init__(self, state: StateSource, host: str, port: int) -> None:
        self._state = state
        self.host = host
        self.port = port
        self.stopping = False
        """Set at shutdown: the line becomes ``drain`` (open sessions are closed by then)."""
        self._server: asyncio.Server | None = None
        self.answered = 0

    @property
    def bound_port(self) -> int:
        """The port actually listened on (``port`` 0 picks a free one, for tests)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    def reply(self) -> str:
        state = self._state()
        if self.stopping and not state.stopping:
            state = WorkerState(state.active, state.capacity, state.ready, stopping=True)
        return agent_reply(state)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, self.host, self.port)
        log.info("load balancer agent listening on %s:%d", self.host, self.bound_port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = self.reply()
            writer.write(line.encode("ascii"))
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
            self.answered += 1
        except (OSError, TimeoutError) as exc:  # the checker went away: nothing to do
            log.debug("load balancer agent: reply not sent: %r", exc)
        except Exception:  # a bug in the state source must not kill the server
            log.exception("load balancer agent: building the reply failed")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
