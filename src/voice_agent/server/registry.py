"""The app's one registry (``app.state.registry``): config, services, sessions, start time."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import V3Config
from ..core.loop_lag import LoopLagMonitor
from ..core.loop_stall import LoopStallReporter
from ..core.recovery import ErrorRecoveryManager, recovery_from_config
from .prometheus import TurnMetricsExporter
from .sessions import SessionManager

if TYPE_CHECKING:
    from ..services.factory import Services
    from .cluster import ClusterRegistry
    from .redis_link import RedisLink


@dataclass
class AppRegistry:
    config: V3Config
    sessions: SessionManager
    services: Services | None = None
    services_ready: bool = False
    """True once the models are loaded and warmed up; sessions are refused before that."""
    load_error: str | None = None
    web_dist: Path | None = None
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    recovery: ErrorRecoveryManager | None = None
    """Retries and one circuit breaker per provider, shared by every session."""
    prometheus: TurnMetricsExporter = field(default_factory=TurnMetricsExporter)
    loop_lag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    """The event loop's lag over the last minute (shown by /v3/health)."""
    loop_stall: LoopStallReporter | None = None
    """Logs where the loop's thread was when ``loop_lag`` saw it stop running
    (server.loop_stall_log_ms); made when the server starts."""
    cluster: ClusterRegistry | None = None
    """The registry shared with other workers in Redis (``server.redis_url``); None: this
    process alone, as without Redis."""
    redis: RedisLink | None = None
    """The worker's one Redis client (``server.redis_url``), shared by ``cluster`` and the
    resume store; its outage state makes /v3/health ``degraded``. None without Redis."""

    def __post_init__(self) -> None:
        if self.recovery is None:
            self.recovery = recovery_from_config(self.config.recovery)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def authorized(self, headers: Any, query: Any) -> bool:
        """Bearer token check (only when ``auth_token`` is configured): ``Authorization:
        Bearer <token>`` or, for WebSockets (browsers cannot set their headers), ``?token=``.

        Compared as bytes in constant time: ``hmac.compare_digest`` on str raises TypeError
        for non-ASCII text, which a client must not be able to trigger.
        """
        token = self.config.auth_token
        if token is None:
            return True
        expected = token.get_secret_value().encode("utf-8")
        auth = headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            # Header values arrive decoded as latin-1. A client may have sent the token's UTF-8
            # bytes (encoding back gives them) or its latin-1 bytes: accept either, both
            # compared every time.
            sent = auth[7:].strip()
            raw = sent.encode("latin-1", "replace")
            text = sent.encode("utf-8", "surrogatepass")
            return hmac.compare_digest(raw, expected) | hmac.compare_digest(text, expected)
        given = str(query.get("token") or "").encode("utf-8", "surrogatepass")
        return hmac.compare_digest(given, expected)


def get_registry(app: Any) -> AppRegistry:
    return app.state.registry  # type: ignore[no-any-return]
