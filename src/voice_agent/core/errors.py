"""Typed provider errors, so callers can tell a timeout from an open circuit from a bug.

They live in core, not next to the providers, because core (the recovery wrapper) raises and
tells them apart, and core must not depend on the services layer: providers import these, never
the other way round. ``voice_agent.services.errors`` re-exports them for older imports.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider (STT, LLM, TTS) failed. ``provider`` names it; ``retryable`` says if a retry may help."""

    code = "provider_error"

    def __init__(self, provider: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable


class ProviderTimeoutError(ProviderError):
    code = "provider_timeout"


class CircuitOpenError(ProviderError):
    """The provider failed too often; calls are refused until its cool-down ends."""

    code = "provider_unavailable"

    def __init__(self, provider: str, retry_after_s: float) -> None:
        super().__init__(provider, f"circuit open, retry in {retry_after_s:.1f}s", retryable=False)
        self.retry_after_s = retry_after_s


class ModelNotReadyError(ProviderError):
    """Weights are missing or failed verification; `voice-agent models` prepares them."""

    code = "model_not_ready"

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(provider, message, retryable=False)
