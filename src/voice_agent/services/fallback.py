"""A cloud provider's local stand-in while it fails (``stt.fallback`` / ``voice.fallback`` =
"local"): when it switches, for how long, and what /v3/health shows. The STT and TTS sides
(services/stt_deepgram.py, services/tts_elevenlabs.py) each decide what to hand over."""

from __future__ import annotations

import logging
import time
from typing import Any

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ProviderError

log = logging.getLogger(__name__)


class FallbackSwitch:
    """Entered when the cloud provider failed whatever the retries; held for ``hold_s``
    (``recovery.reset_timeout_s``, at least 5 s), in which new work goes to the local provider;
    left when the cloud provider succeeds again. Entering and leaving are logged."""

    def __init__(self, config: V3Config, remote_name: str, local_name: str, role: str,
                 doing: str) -> None:
        self.remote_name, self.local_name = remote_name, local_name
        self.role, self.doing = role, doing
        """For the log lines: "stt", "transcribing"; "tts", "speaking"."""
        self.hold_s = max(5.0, config.recovery.reset_timeout_s)
        self.active_until = 0.0
        self.since: float | None = None
        self.reason = ""
        self.calls = 0
        """Work the local provider took over, in all."""

    @property
    def active(self) -> bool:
        return self.since is not None

    @property
    def holding(self) -> bool:
        """Within the hold: new work goes straight to the local provider."""
        return self.active and time.monotonic() < self.active_until

    def status(self) -> dict[str, Any]:
        return {"provider": self.local_name, "active": self.active, "reason": self.reason,
                "active_for_s": round(time.monotonic() - self.since, 3) if self.since else 0.0,
                "local_calls": self.calls}

    def enter(self, exc: ProviderError) -> None:
        self.active_until = time.monotonic() + self.hold_s
        self.reason = str(exc)[:300]
        if not self.active:
            self.since = time.monotonic()
            log.warning("%s: %s failed (%s): %s with the local %s for at least %.0f s",
                        self.role, self.remote_name, self.reason, self.doing, self.local_name,
                        self.hold_s)

    def leave(self) -> None:
        if self.active:
            log.warning("%s: %s is back; the local fallback (%s) stops after %.1f s", self.role,
                        self.remote_name, self.local_name, time.monotonic() - (self.since or 0))
            self.since, self.reason = None, ""
