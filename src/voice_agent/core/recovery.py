"""Retries with backoff, per-provider circuit breakers, and timeouts for provider calls.

Every failure reaches the caller as a typed :class:`ProviderError` so the pipeline can tell a
timeout (:class:`ProviderTimeoutError`) from a provider that is down (:class:`CircuitOpenError`)
from anything else. Cancellation (barge-in, session end) is never retried nor counted as a
failure: it is the caller's decision, not the provider's fault.

Each failure handled here (retried, final, or opening a circuit) is logged once, with its
``error_type`` and ``severity`` (core/recovery_log.py says which).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .errors import CircuitOpenError, ProviderError, ProviderTimeoutError
from .recovery_log import log_failure
from .status import ErrorType

if TYPE_CHECKING:
    from .config import RecoveryConfig

P = ParamSpec("P")
T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry. ``attempts`` counts the first try too."""

    attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 2.0
    jitter: bool = True
    """Full jitter: sleep a uniform random time in [0, backoff] so clients do not retry in step."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must not be negative")

    def backoff_s(self, retry: int) -> float:
        """The backoff cap before retry number ``retry`` (1 = first retry): base * 2**(retry-1)."""
        return min(self.max_delay_s, self.base_delay_s * (2 ** max(retry - 1, 0)))

    def delay_s(self, retry: int, rng: random.Random | None = None) -> float:
        cap = self.backoff_s(retry)
        if not self.jitter:
            return cap
        return (rng or random).uniform(0.0, cap)

    def should_retry(self, original: BaseException, typed: ProviderError) -> bool:
        # A provider that says a retry cannot help (open circuit, missing model) is believed.
        if not typed.retryable:
            return False
        return isinstance(original, self.retry_on) or isinstance(typed, self.retry_on)


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_timeout_s`` one
    trial call goes through (half-open): its success closes the circuit, its failure re-opens it.

    Use :meth:`before_call`, then exactly one of :meth:`record_success`, :meth:`record_failure`
    or :meth:`release` (the call was cancelled: neither success nor failure).
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._open = False
        self._failures = 0
        self._total_failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if not self._open:
            return BreakerState.CLOSED
        if self.retry_after_s > 0:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def failures(self) -> int:
        """Consecutive failures (reset by a success)."""
        return self._failures

    @property
    def total_failures(self) -> int:
        return self._total_failures

    @property
    def opened_at(self) -> float | None:
        """When the circuit last opened, on the breaker's clock; None while closed."""
        return self._opened_at

    @property
    def retry_after_s(self) -> float:
        if not self._open or self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpenError`."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        raise CircuitOpenError(self.name, self.retry_after_s)

    def record_success(self) -> None:
        self._open = False
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> bool:
        """Count a failure; True when it opened the circuit (or re-opened it: a failed trial)."""
        self._failures += 1
        self._total_failures += 1
        # A failed trial re-opens at once; otherwise open at the threshold (a call admitted
        # before the circuit opened that fails after restarts the cool-down, opening nothing).
        opened = self._trial_in_flight or (not self._open and
                                           self._failures >= self.failure_threshold)
        if self._trial_in_flight or self._failures >= self.failure_threshold:
            self._open = True
            self._opened_at = self._clock()
        self._trial_in_flight = False
        return opened

    def release(self) -> None:
        """The admitted call ended without a verdict (cancelled): free the half-open trial slot."""
        self._trial_in_flight = False

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "failures": self._failures,
            "total_failures": self._total_failures,
            "opened_at": self._opened_at,
            "retry_after_s": round(self.retry_after_s, 3),
        }


def as_provider_error(
    provider: str, exc: BaseException, timeout_s: float | None = None
) -> ProviderError:
    """The typed error for ``exc``: ProviderErrors pass through, timeouts and the rest are
    wrapped (with ``__cause__`` set). Any TimeoutError counts as a timeout, ours or the
    provider's own."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TimeoutError):
        limit = f" within {timeout_s:g}s" if timeout_s is not None else ""
        typed: ProviderError = ProviderTimeoutError(provider, f"no answer{limit}")
    else:
        typed = ProviderError(provider, str(exc) or type(exc).__name__)
    typed.__cause__ = exc
    return typed


class ErrorRecoveryManager:
    """One circuit breaker per provider name, plus retrying wrappers for calls and streams."""

    def __init__(
        self,
        *,
        default_policy: RetryPolicy | None = None,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.default_policy = default_policy or RetryPolicy()
        self._failure_threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, provider: str) -> CircuitBreaker:
        """The provider's breaker, created on first use."""
        br = self._breakers.get(provider)
        if br is None:
            br = CircuitBreaker(
                provider, self._failure_threshold, self._reset_timeout_s, clock=self._clock
            )
            self._breakers[provider] = br
        return br

    def status(self) -> dict[str, dict[str, Any]]:
        """Per provider: state, failures, opened_at, ... (for the health endpoint)."""
        return {name: br.status() for name, br in sorted(self._breakers.items())}

    async def call(
        self,
        provider: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        policy: RetryPolicy | None = None,
        timeout_s: float | None = None,
        kind: ErrorType | None = None,
        **kwargs: Any,
    ) -> T:
        """Await ``fn(*args, **kwargs)`` with timeout, retries and the provider's breaker.

        ``kind`` (STT, LLM, TTS) is for the failure log; None tells it from the provider's name.
        """
        policy = policy or self.default_policy
        br = self.breaker(provider)
        last: ProviderError | None = None
        for attempt in range(1, policy.attempts + 1):
            delay_s = 0.0
            try:
                br.before_call()
            except CircuitOpenError as exc:
                raise exc from last  # the cause shows why the circuit opened
            try:
                async with asyncio.timeout(timeout_s):
                    result = await fn(*args, **kwargs)
            except asyncio.CancelledError:
                br.release()
                raise
            except Exception as exc:
                opened = br.record_failure()
                last = as_provider_error(provider, exc, timeout_s)
                retry_in_s = self._after_failure(provider, kind, policy, attempt, exc, last,
                                                 opened)
                if retry_in_s is None:
                    raise last  # its __cause__ is exc (see as_provider_error)
                delay_s = retry_in_s
            except BaseException:
                br.release()
                raise
            else:
                br.record_success()
                return result
            await self._sleep(delay_s)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _after_failure(self, provider: str, kind: ErrorType | None, policy: RetryPolicy,
                       attempt: int, original: BaseException, typed: ProviderError,
                       opened: bool, *, started: bool = False) -> float | None:
        """Decide what follows a failed attempt and log it once: the backoff before the next
        attempt, or None when the caller gets the error (``started``: a stream failed after
        its first item). The backoff is drawn only when there is a retry."""
        reason = ("the stream had started" if started else
                  "no attempt left" if attempt == policy.attempts else
                  "not retryable" if not policy.should_retry(original, typed) else "")
        retry_in_s = None if reason else policy.delay_s(attempt, self._rng)
        log_failure(provider, typed, kind=kind, attempt=attempt, attempts=policy.attempts,
                    retry_in_s=retry_in_s, circuit_opened=opened, final_reason=reason)
        return retry_in_s

    def with_retry(
        self,
        provider: str,
        policy: RetryPolicy | None = None,
        timeout_s: float | None = None,
        kind: ErrorType | None = None,
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
        """Decorator form of :meth:`call` for async functions."""

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self.call(
                    provider, fn, *args, policy=policy, timeout_s=timeout_s, kind=kind, **kwargs
                )

            return wrapper

        return decorate

    async def guard_stream(
        self,
        provider: str,
        factory: Callable[[], AsyncIterator[T]],
        *,
        first_item_timeout_s: float | None = None,
        item_timeout_s: float | None = None,
        policy: RetryPolicy | None = None,
        kind: ErrorType | None = None,
    ) -> AsyncIterator[T]:
        """Yield from ``factory()`` (an LLM or TTS stream) with retries and the breaker.

        A failure or a timeout before the first item is retried with a fresh stream; after the
        first item it is raised at once (typed), since that data already went to the user.
        ``item_timeout_s`` bounds the wait for each later item (a stalled stream). Closing this
        generator early (barge-in) closes the provider's stream and counts as no failure.
        ``kind`` as in :meth:`call`.
        """
        policy = policy or self.default_policy
        br = self.breaker(provider)
        last: ProviderError | None = None
        for attempt in range(1, policy.attempts + 1):
            delay_s = 0.0
            try:
                br.before_call()
            except CircuitOpenError as exc:
                raise exc from last
            agen = factory()
            started = False
            try:
                try:
                    async with asyncio.timeout(first_item_timeout_s):
                        item = await anext(agen)
                except StopAsyncIteration:
                    br.record_success()  # an empty stream is a valid answer
                    return
                started = True
                while True:
                    yield item
                    try:
                        async with asyncio.timeout(item_timeout_s):
                            item = await anext(agen)
                    except StopAsyncIteration:
                        break
                br.record_success()
                return
            except (asyncio.CancelledError, GeneratorExit):
                # The consumer stopped; if data flowed the provider was healthy.
                if started:
                    br.record_success()
                else:
                    br.release()
                raise
            except Exception as exc:
                opened = br.record_failure()
                limit = item_timeout_s if started else first_item_timeout_s
                last = as_provider_error(provider, exc, limit)
                retry_in_s = self._after_failure(provider, kind, policy, attempt, exc, last,
                                                 opened, started=started)
                if retry_in_s is None:
                    raise last  # its __cause__ is exc (see as_provider_error)
                delay_s = retry_in_s
            except BaseException:
                br.release()
                raise
            finally:
                await _aclose(agen)
            await self._sleep(delay_s)


async def _aclose(agen: AsyncIterator[Any]) -> None:
    # Provider streams stop generating when closed (see services.base); plain iterators may not
    # have aclose at all.
    close = getattr(agen, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # a stream that fails while closing has nothing left to give
            pass


def recovery_from_config(config: RecoveryConfig) -> ErrorRecoveryManager:
    """The server's one recovery manager, shaped by the `recovery` config section."""
    policy = RetryPolicy(attempts=config.attempts, base_delay_s=config.base_delay_s,
                         max_delay_s=config.max_delay_s)
    return ErrorRecoveryManager(default_policy=policy, failure_threshold=config.failure_threshold,
                                reset_timeout_s=config.reset_timeout_s)
