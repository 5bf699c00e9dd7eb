"""Old home of the provider errors, kept so existing imports work: they live in
:mod:`voice_agent.core.errors` now (core raises them and must not import services)."""

from __future__ import annotations

from voice_agent.core.errors import (
    CircuitOpenError,
    ModelNotReadyError,
    ProviderError,
    ProviderTimeoutError,
)

__all__ = ["CircuitOpenError", "ModelNotReadyError", "ProviderError", "ProviderTimeoutError"]
