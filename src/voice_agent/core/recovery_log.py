"""The error recovery's log: one structured line per provider failure.

Every failure :class:`~voice_agent.core.recovery.ErrorRecoveryManager` handles (an attempt that
is retried, the final failure the caller gets, the failure that opens a circuit) is one record
on the ``voice_agent.core.recovery`` logger: readable text, and these ``extra`` fields for a
JSON formatter or a log search:

``error_type`` (:class:`ErrorType`)
    TIMEOUT for a timeout (ours or the provider's own), else the provider's kind: STT, LLM or
    TTS (:func:`provider_kind`), INTERNAL for a provider whose kind is not known.
``severity`` (:class:`ErrorSeverity`), by :func:`failure_severity`.
``provider``, ``provider_kind``, ``attempt``, ``attempts``, ``will_retry``, ``retry_in_s``
(None when not retried), ``circuit_opened``.

The record's level follows the severity: LOW and MEDIUM are WARNING, HIGH is ERROR, CRITICAL is
CRITICAL. A call refused by an open circuit is not logged: the provider was not called, and the
failure that opened the circuit was logged, CRITICAL, when it did.
"""

from __future__ import annotations

import logging

from .errors import ProviderError, ProviderTimeoutError
from .status import ErrorSeverity, ErrorType

log = logging.getLogger("voice_agent.core.recovery")

KIND_PREFIXES: tuple[tuple[str, ErrorType], ...] = (
    ("whisper", ErrorType.STT), ("deepgram", ErrorType.STT), ("openai-stt", ErrorType.STT),
    ("stt", ErrorType.STT),
    ("openai-tts", ErrorType.TTS),  # before "openai", the LLM's
    ("llamacpp", ErrorType.LLM), ("groq", ErrorType.LLM), ("openai", ErrorType.LLM),
    ("llm", ErrorType.LLM),
    ("piper", ErrorType.TTS), ("espeak", ErrorType.TTS), ("elevenlabs", ErrorType.TTS),
    ("tts", ErrorType.TTS),
)
"""Provider name prefix -> kind: the built-in providers' ``name`` (services/*.py) and the bare
kind names. A provider named otherwise can say its kind with the ``kind=`` argument of
``ErrorRecoveryManager.call`` / ``guard_stream``."""

LEVELS = {ErrorSeverity.LOW: logging.WARNING, ErrorSeverity.MEDIUM: logging.WARNING,
          ErrorSeverity.HIGH: logging.ERROR, ErrorSeverity.CRITICAL: logging.CRITICAL}


def provider_kind(provider: str) -> ErrorType:
    """STT, LLM or TTS from the provider's name (``whisper``, ``llamacpp``, ``piper-2``...);
    INTERNAL for a name no prefix matches."""
    name = provider.lower()
    return next((kind for prefix, kind in KIND_PREFIXES if name.startswith(prefix)),
                ErrorType.INTERNAL)


def failure_error_type(kind: ErrorType, error: ProviderError) -> ErrorType:
    """A timeout is TIMEOUT whatever the provider; any other failure is its provider's kind."""
    return ErrorType.TIMEOUT if isinstance(error, ProviderTimeoutError) else kind


def failure_severity(error: ProviderError, *, will_retry: bool,
                     circuit_opened: bool) -> ErrorSeverity:
    """The rule, first match wins:

    - CRITICAL: this failure opened (or, a failed half-open trial, re-opened) the provider's
      circuit: every session's calls to it are refused for the cool-down.
    - HIGH: final: the caller gets the error (no attempt left, a retry cannot help, or a stream
      failed after its first item, which the user already has).
    - MEDIUM: a timeout that is retried: the user already waited the whole timeout.
    - LOW: any other failure that is retried (quick, and the retry may well succeed).
    """
    if circuit_opened:
        return ErrorSeverity.CRITICAL
    if not will_retry:
        return ErrorSeverity.HIGH
    if isinstance(error, ProviderTimeoutError):
        return ErrorSeverity.MEDIUM
    return ErrorSeverity.LOW


def log_failure(provider: str, error: ProviderError, *, kind: ErrorType | None, attempt: int,
                attempts: int, retry_in_s: float | None, circuit_opened: bool,
                final_reason: str = "") -> None:
    """Log one handled failure (see the module docstring). ``retry_in_s`` is the backoff
    before the next attempt, None when there is none; ``final_reason`` says why not."""
    kind = kind or provider_kind(provider)
    error_type = failure_error_type(kind, error)
    will_retry = retry_in_s is not None
    severity = failure_severity(error, will_retry=will_retry, circuit_opened=circuit_opened)
    outcome = f"retrying in {retry_in_s:.2f}s" if retry_in_s is not None else \
        f"giving up ({final_reason})" if final_reason else "giving up"
    if circuit_opened:
        outcome += "; circuit opened"
    log.log(LEVELS[severity],
            "%s provider %s failed on attempt %d/%d (error_type=%s, severity=%s): %s; %s",
            kind.value, provider, attempt, attempts, error_type.value, severity.value, error,
            outcome,
            extra={"provider": provider, "provider_kind": kind, "error_type": error_type,
                   "severity": severity, "attempt": attempt, "attempts": attempts,
                   "will_retry": will_retry, "retry_in_s": retry_in_s,
                   "circuit_opened": circuit_opened})
