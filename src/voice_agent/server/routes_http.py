"""HTTP endpoints: the page, service info, health, sessions, WebRTC stats, config."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .. import __version__
from .auth import protected_router
from .capacity import server_load
from .cluster_admission import redact_url
from .memory import memory_report
from .prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from .registry import AppRegistry, get_registry
from .transcript_log import read_transcript, valid_session_id

router = APIRouter()
protected = protected_router()
"""The routes that need the token (when one is configured): the router checks it, no route does.
Included in ``router`` below, after its last route."""

ENDPOINTS = {
    "page": "/",
    "health": "/v3/health",
    "sessions": "/v3/sessions",
    "transcript": "/v3/sessions/{session_id}/transcript",
    "webrtc_stats": "/v3/webrtc/stats",
    "config": "/v3/config",
    "metrics": "/v3/metrics",
    "signaling": "/ws/v3",
    "audio": "/ws/v3/audio",
    "docs": "/docs",
}
ROLES = ("stt", "vad", "llm", "tts")


def find_web_dist() -> Path | None:
    """web/dist of the repository this package runs from (src layout), else of the cwd."""
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "web" / "dist", Path.cwd() / "web" / "dist"]
    for path in candidates:
        if (path / "index.html").is_file():
            return path
    return None


def _wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def service_info() -> dict[str, Any]:
    return {"name": "voice-agent", "version": __version__, "endpoints": ENDPOINTS}


@router.get("/", response_model=None)
async def index(request: Request) -> Response:
    registry = get_registry(request.app)
    if registry.web_dist is not None and not _wants_json(request):
        return FileResponse(registry.web_dist / "index.html", media_type="text/html")
    return JSONResponse(service_info())


def _models(registry: AppRegistry) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        service = getattr(registry.services, role, None) if registry.services else None
        name = getattr(service, "name", None) if service is not None else None
        out[role] = {"loaded": registry.services_ready and service is not None,
                     "name": name if isinstance(name, str) else type(service).__name__}
        # A cloud provider speaking through its local fallback (voice.fallback = "local").
        fallback_status = getattr(getattr(service, "fallback", None), "status", None)
        fallback = fallback_status() if callable(fallback_status) else None
        if isinstance(fallback, dict):
            out[role]["fallback"] = fallback
    return out


@router.get("/v3/health")
async def health(request: Request) -> JSONResponse:
    registry = get_registry(request.app)
    models = _models(registry)
    stalled = _stalled_sessions(registry)
    cluster = registry.cluster
    if registry.load_error:
        status = "error"
    elif not registry.services_ready:
        status = "loading"
    elif (all(m["loaded"] for m in models.values()) and not stalled
          and not any(m.get("fallback", {}).get("active") for m in models.values())
          and (registry.redis is None or registry.redis.up)):
        status = "ok"
    else:
        # Redis unreachable included: this worker serves its own sessions, admission is by its
        # own max_sessions and the listings show its own sessions only (cluster.py).
        status = "degraded"
    body = {
        "status": status,
        "version": __version__,
        "worker": registry.config.server.worker_id,
        "models": models,
        "uptime_s": round(registry.uptime_s, 3),
        "active_sessions": len(registry.sessions),
        "stalled_sessions": len(stalled),
        "max_sessions": registry.sessions.max_sessions,
        # Admission control (capacity.py): the capacity is max_sessions; load 1 = full or not
        # accepting sessions (the next one is refused), for a load balancer to read. With
        # several workers it stays this worker's own figure (lb_agent.py answers the same): a
        # balancer weighs workers against each other, and a figure for the whole cluster is the
        # same on every worker. When the cluster is full, each worker refuses with ``busy`` and
        # its retry_after_s, a better answer than the balancer's own error once every worker
        # reads full; the cluster's figures are in ``cluster``.
        "capacity": registry.sessions.max_sessions,
        "load": server_load(len(registry.sessions), registry.sessions.max_sessions,
                            accepting=registry.services_ready and not registry.load_error),
        "providers": registry.recovery.status() if registry.recovery else {},
        "memory": memory_report(),
        "event_loop_lag": registry.loop_lag.snapshot().as_dict(),
        # Several workers (server.redis_url): Redis ok / down, workers, sessions and load
        # across them, as of the last heartbeat (no Redis call here); null without Redis.
        "cluster": cluster.health() if cluster is not None else None,
    }
    if registry.load_error:
        body["error"] = registry.load_error
    return JSONResponse(body, status_code=200 if status in ("ok", "degraded") else 503)


def _stalled_sessions(registry: AppRegistry) -> list[str]:
    """Sessions whose turn made no progress for longer than the pipeline's watchdog allows (a
    turn stuck on a provider that never answers): the server is not "ok" while one is."""
    return [s.id for s in registry.sessions.list() if getattr(s.pipeline, "stalled", False)]


@router.get("/v3/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Per-turn stage timings as Prometheus histograms (text exposition format)."""
    registry = get_registry(request.app)
    registry.prometheus.sessions.set(len(registry.sessions))
    registry.prometheus.load.set(server_load(
        len(registry.sessions), registry.sessions.max_sessions,
        accepting=registry.services_ready and not registry.load_error))
    return Response(registry.prometheus.render(), media_type=PROMETHEUS_CONTENT_TYPE)


@protected.get("/v3/sessions")
async def sessions(request: Request) -> list[dict[str, Any]]:
    """This worker's sessions, then (several workers) every other live worker's as last pushed
    by its heartbeat; each with its ``worker``."""
    registry = get_registry(request.app)
    out = [s.info.as_dict() for s in registry.sessions.list()]
    if registry.cluster is not None:
        out += await registry.cluster.remote_sessions() or []
    return out


@protected.get("/v3/sessions/{session_id}/transcript")
async def transcript(session_id: str, request: Request) -> dict[str, Any]:
    """The session's records from its JSON-lines file: live sessions and ended ones alike."""
    registry = get_registry(request.app)
    # Strict format check before any path is built: no traversal, no odd names.
    if not valid_session_id(session_id):
        raise HTTPException(status_code=404, detail="unknown session")
    records = await asyncio.to_thread(read_transcript, registry.config.server.transcripts_dir,
                                      session_id)
    cluster = registry.cluster
    active = registry.sessions.get(session_id) is not None
    if records is None and cluster is not None:
        # Held (or once held) by another worker: its copy in Redis (cluster_transcripts.py).
        records = await cluster.read_transcript(session_id)
        if records is not None:
            remote = await cluster.remote_sessions() or []
            active = any(e.get("session_id") == session_id for e in remote)
    if records is None:
        raise HTTPException(status_code=404, detail="unknown session")
    return {"session_id": session_id, "active": active, "records": records}


@protected.get("/v3/webrtc/stats")
async def webrtc_stats(request: Request) -> dict[str, Any]:
    """This worker's sessions with live stats (``live``: true); with several workers, every
    other worker's sessions too, with the stats their worker pushed at its last heartbeat
    (``live``: false, ``stats_age_s``): live ones come from that worker's own endpoint."""
    registry = get_registry(request.app)
    worker = registry.config.server.worker_id
    out: dict[str, Any] = {}
    for session in registry.sessions.list():
        transport = session.transport
        stats: dict[str, Any] = {"transport": session.info.transport}
        if transport is not None and not session.closing:
            try:
                stats.update(await transport.stats())
            except Exception as exc:  # a connection closing under us
                stats["error"] = repr(exc)
        out[session.id] = {**stats, "worker": worker, "live": True}
    if registry.cluster is not None:
        now = time.time()
        for entry in await registry.cluster.remote_sessions() or []:
            pushed = entry.get("pushed_at")
            pushed_stats = entry.get("stats")
            out[entry["session_id"]] = {
                "transport": entry.get("transport"),
                **(pushed_stats if isinstance(pushed_stats, dict) else {}),
                "worker": entry.get("worker"), "live": False,
                "stats_age_s": round(now - pushed, 3) if isinstance(pushed, (int, float))
                else None}
    return {"sessions": out, "active_sessions": len(out), "worker": worker}


@protected.get("/v3/config")
async def config(request: Request) -> dict[str, Any]:
    registry = get_registry(request.app)
    body = registry.config.redacted()
    if body["server"].get("redis_url"):
        body["server"]["redis_url"] = redact_url(body["server"]["redis_url"])
    return body


router.include_router(protected)  # here: before the catch-all below, as the routes always were


@router.get("/{filename}", include_in_schema=False, response_model=None)
async def dist_file(filename: str, request: Request) -> Response:
    """Files at the root of web/dist (the microphone-level worklet, icons). One path segment
    only, and only names that exist there, so nothing outside web/dist can be reached."""
    dist = get_registry(request.app).web_dist
    if dist is not None and not filename.startswith("."):
        names = {p.name: p for p in dist.iterdir() if p.is_file()}
        if filename in names:
            return FileResponse(names[filename])
    raise HTTPException(status_code=404, detail="not found")
