"""The FastAPI application.

``create_app`` wires the routes and a lifespan that loads the models once (shared by every
session), starts the session reaper, and on shutdown closes every session before the models.
OpenAPI docs are at /docs (FastAPI's Swagger UI loads its script from a CDN; /openapi.json works
offline).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..core.config import V3Config
from ..core.loop_stall import LoopStallReporter
from ..transport.ice import restrict_host_addresses
from . import routes_http, signaling
from .cluster_admission import ClusterAdmission, url_password
from .hosts import HostCheck, allowed_hosts
from .memory import after_session, freeze_startup_objects, limit_arenas
from .registry import AppRegistry
from .resume import close_conversation_store
from .security import redacted_logs
from .sessions import SessionManager

if TYPE_CHECKING:
    from ..services.factory import Services

log = logging.getLogger(__name__)


def create_app(config: V3Config | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. ``services``, when given, must already be loaded (tests share one set);
    otherwise the lifespan builds, loads and warms them up, and closes them at shutdown."""
    config = config or V3Config()
    server = config.server
    registry = AppRegistry(
        config=config,
        sessions=SessionManager(
            # This worker's own capacity; with Redis, max_sessions is every worker's together.
            server.worker_max_sessions or server.max_sessions,
            server.idle_timeout_s, server.max_session_s,
            after_close=after_session if server.trim_memory_after_session else None,
            worker=server.worker_id),
        services=services,
        web_dist=routes_http.find_web_dist(),
    )
    if server.redis_url:
        from .cluster import ClusterRegistry  # redis-py only when there is a Redis
        from .redis_link import RedisLink

        # One client (one pool, one outage state) for the registry and the resume store.
        registry.redis = RedisLink(server.redis_url)
        registry.cluster = ClusterRegistry(
            registry.redis, worker=server.worker_id, max_sessions=server.max_sessions,
            ttl_s=server.registry_ttl_s, transcripts_dir=server.transcripts_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = registry.services is None
        if owned:
            from ..services.factory import build_services, load_services

            limit_arenas(server.malloc_arena_max)  # before the model threads exist
            try:
                registry.services = build_services(config)
                await load_services(registry.services, warmup=True)
            except Exception as exc:
                registry.load_error = f"{type(exc).__name__}: {exc}"
                log.error("loading the models failed: %s", registry.load_error)
                raise
        if server.trim_memory_after_session:
            freeze_startup_objects()
        if registry.cluster is not None:
            # Registered (or the outage noted) before the first session is admitted.
            await registry.cluster.start(registry.sessions)
        registry.services_ready = True
        registry.sessions.start()
        registry.loop_lag.start()
        registry.loop_stall = LoopStallReporter(registry.loop_lag, server.loop_stall_log_ms / 1000)
        registry.loop_stall.start()
        log.info("voice-agent %s ready (max %d sessions, event loop %s)", __version__,
                 server.max_sessions, type(asyncio.get_running_loop()).__module__.split(".")[0])
        try:
            # aioice has no per-connection setting, so the address choice covers the process.
            with restrict_host_addresses(config.webrtc.host_addresses), \
                    redacted_logs(_secrets(config)):
                yield
        finally:
            await registry.loop_lag.stop()
            if registry.loop_stall is not None:
                await registry.loop_stall.stop()
            await registry.sessions.stop()  # closes every session
            await close_conversation_store(app)  # their last saves for a resume
            if registry.cluster is not None:
                await registry.cluster.stop()  # after the sessions: their last records too
            if registry.redis is not None:
                await registry.redis.aclose()  # once, after both of its users
            registry.services_ready = False
            if owned and registry.services is not None:
                _close_services(registry.services)

    app = FastAPI(title="voice-agent", version=__version__, lifespan=lifespan,
                  description="Local-first real-time voice agent. See docs/protocol.md.")
    app.state.registry = registry
    # Cross-origin pages may read the HTTP API only when listed: no list, no CORS headers (the
    # page served here is same-origin), and never an implied "*", with or without a token.
    if server.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=server.cors_origins,
                           allow_methods=["GET"], allow_headers=["Authorization"])
    if registry.cluster is not None:
        # A slot across every worker, asked before the session sockets' routes run.
        app.add_middleware(ClusterAdmission, registry=registry)
    # Outermost, so that nothing (CORS answers included) reaches a request with a foreign Host.
    app.add_middleware(HostCheck, hosts=allowed_hosts(server.host, server.allowed_hosts))
    app.include_router(routes_http.router)
    app.include_router(signaling.router)
    if registry.web_dist is not None and (registry.web_dist / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=registry.web_dist / "assets"), name="assets")
    return app


def _secrets(config: V3Config) -> list[str]:
    values = [config.auth_token, config.ai.api_key, config.stt.api_key, config.voice.api_key,
              *(s.credential for s in config.webrtc.ice_servers)]
    secrets = [v.get_secret_value() for v in values if v is not None]
    redis_password = url_password(config.server.redis_url)
    return secrets + ([redis_password] if redis_password else [])


def _close_services(services: object) -> None:
    close = getattr(services, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:
            log.warning("closing the models: %r", exc)
