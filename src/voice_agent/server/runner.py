"""Running the app under uvicorn with a graceful shutdown.

Why not plain ``uvicorn.run``: on SIGTERM/SIGINT uvicorn first drops every WebSocket with close
code 1012 and only then runs the app's shutdown, so clients never saw 1001 and the transcripts
said "client disconnected". :class:`GracefulServer` stops accepting connections, closes every
session (close 1001 "server shutdown", a ``session_end`` record in each transcript), then lets
uvicorn finish; and a stop by signal exits with status 0 instead of re-raising the signal.

With ``server.lb_agent_port`` set, the server also runs HAProxy's agent check (lb_agent.py) for
as long as it serves: started before the models load (it answers ``down`` until they are
ready), ``drain`` from the first moment of the shutdown, closed last.

``python -m voice_agent.server.runner`` serves the configuration from the environment (the same
as ``voice-agent serve`` once the CLI uses :func:`serve`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from ..core.config import V3Config
from .connection_limits import ConnectionLimits, limited_http_protocol
from .lb_agent import LoadBalancerAgent, registry_state
from .registry import get_registry
from .sessions import CLOSE_GOING_AWAY

log = logging.getLogger(__name__)

SESSIONS_CLOSE_TIMEOUT_S = 5.0
GRACEFUL_SHUTDOWN_TIMEOUT_S = 5.0
"""After the sessions are closed, how long uvicorn waits for other connections."""


class GracefulServer(uvicorn.Server):
    """uvicorn.Server that closes the app's sessions before the connections are dropped."""

    def __init__(self, config: uvicorn.Config, app: Any, *,
                 lb_agent_port: int | None = None) -> None:
        super().__init__(config)
        self._app = app
        self.lb_agent: LoadBalancerAgent | None = None
        if lb_agent_port is not None:
            self.lb_agent = LoadBalancerAgent(registry_state(get_registry(app)),
                                              config.host, lb_agent_port)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self.lb_agent is None:
            await super().serve(sockets)
            return
        await self.lb_agent.start()
        try:
            await super().serve(sockets)
        finally:  # also when the start-up failed (uvicorn then raises SystemExit)
            await self.lb_agent.stop()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.lb_agent is not None:
            self.lb_agent.stopping = True  # the balancer sends nobody new from now on
        for server in self.servers:
            server.close()  # no new sessions while the old ones close
        registry = get_registry(self._app)
        try:
            async with asyncio.timeout(SESSIONS_CLOSE_TIMEOUT_S):
                await registry.sessions.close_all(CLOSE_GOING_AWAY, "server shutdown")
        except Exception as exc:  # the rest of the shutdown must still happen
            log.error("closing the sessions at shutdown: %r", exc)
        await super().shutdown(sockets)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # The shutdown the signal asked for is done: exit normally, don't re-raise it.
            self._captured_signals.clear()


def uvicorn_config(app: Any, config: V3Config, *, log_level: str = "info") -> uvicorn.Config:
    server = config.server
    # Half-sent requests and per-client connection floods are bounded in the HTTP protocol,
    # below the app (connection_limits.py); one count per server.
    limits = ConnectionLimits(server.max_connections_per_client, server.header_timeout_s)
    return uvicorn.Config(
        app, host=server.host, port=server.port, log_level=log_level, lifespan="on",
        http=limited_http_protocol(limits),
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_TIMEOUT_S),
        # Let oversized messages reach the app, which answers message_too_large.
        ws_max_size=max(4 * 1024 * 1024, 4 * server.max_message_bytes))


PER_PACKET_LOGGERS = ("aiortc.rtcrtpsender", "aiortc.rtcrtpreceiver")
"""aiortc logs every RTP packet at DEBUG: ~350 lines a second with four sessions, which drowned
the server's own DEBUG lines and cost CPU the sessions needed. Kept at INFO."""


def quiet_per_packet_logs() -> None:
    """Keep :data:`PER_PACKET_LOGGERS` at INFO or above whatever the root level is."""
    for name in PER_PACKET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))


def serve(config: V3Config, *, log_level: str = "info") -> int:
    """Serve until SIGINT/SIGTERM; return the exit status (0 after a graceful stop)."""
    quiet_per_packet_logs()
    from .app import create_app

    app = create_app(config)
    GracefulServer(uvicorn_config(app, config, log_level=log_level), app,
                   lb_agent_port=config.server.lb_agent_port).run()
    return 0


def main() -> int:
    from ..core.config import load_config

    config = load_config()
    logging.basicConfig(level=config.log_level)
    return serve(config, log_level=config.log_level.lower())


if __name__ == "__main__":
    raise SystemExit(main())
