"""Retry policy, circuit breaker and ErrorRecoveryManager, with real asyncio and tiny delays."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from voice_agent.core.recovery import (
    BreakerState,
    CircuitBreaker,
    ErrorRecoveryManager,
    RetryPolicy,
)
from voice_agent.core.recovery_log import provider_kind
from voice_agent.core.status import ErrorSeverity, ErrorType
from voice_agent.services.errors import (
    CircuitOpenError,
    ModelNotReadyError,
    ProviderError,
    ProviderTimeoutError,
)

FAST = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.004)


class ManualClock:
    """A clock the test moves by hand, so breaker cool-downs need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Flaky:
    """An async provider call that fails ``fail_times`` times, then answers."""

    def __init__(self, fail_times: int, exc: Exception | None = None) -> None:
        self.fail_times = fail_times
        self.calls = 0
        self.exc = exc or ConnectionError("connection refused")

    async def __call__(self, x: int = 1) -> int:
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls <= self.fail_times:
            raise self.exc
        return x * 2


def manager(clock: ManualClock | None = None, failure_threshold: int = 5) -> ErrorRecoveryManager:
    return ErrorRecoveryManager(
        default_policy=FAST,
        failure_threshold=failure_threshold,
        reset_timeout_s=10.0,
        clock=clock or ManualClock(),
        rng=random.Random(7),
    )


# --- RetryPolicy ---------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    p = RetryPolicy(attempts=6, base_delay_s=0.1, max_delay_s=0.5, jitter=False)
    assert [p.delay_s(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_full_jitter_stays_within_zero_and_the_backoff() -> None:
    p = RetryPolicy(attempts=5, base_delay_s=0.1, max_delay_s=1.0, jitter=True)
    rng = random.Random(1)
    for retry in range(1, 5):
        delays = [p.delay_s(retry, rng) for _ in range(200)]
        cap = p.backoff_s(retry)
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the range, not stuck at zero
        assert len(set(delays)) > 100


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=-1)


# --- CircuitBreaker ------------------------------------------------------------------------


def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    clock = ManualClock()
    br = CircuitBreaker("llm", failure_threshold=3, reset_timeout_s=5.0, clock=clock)
    for _ in range(3):
        br.before_call()
        br.record_failure()
    assert br.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        br.before_call()
    assert info.value.retry_after_s == pytest.approx(5.0)
    assert info.value.provider == "llm" and info.value.retryable is False

    clock.advance(5.0)
    assert br.state is BreakerState.HALF_OPEN
    br.before_call()  # the one trial call
    with pytest.raises(CircuitOpenError):
        br.before_call()  # a second caller waits for the trial's verdict
    br.record_success()
    assert br.state is BreakerState.CLOSED and br.failures == 0


def test_failed_trial_reopens_the_circuit() -> None:
    clock = ManualClock()
    br = CircuitBreaker("tts", failure_threshold=2, reset_timeout_s=5.0, clock=clock)
    br.record_failure()
    br.record_failure()
    clock.advance(6.0)
    br.before_call()
    br.record_failure()
    assert br.state is BreakerState.OPEN
    assert br.opened_at == clock.now
    assert br.retry_after_s == pytest.approx(5.0)


def test_success_resets_consecutive_failures() -> None:
    br = CircuitBreaker("stt", failure_threshold=3, clock=ManualClock())
    br.record_failure()
    br.record_failure()
    br.record_success()
    br.record_failure()
    assert br.state is BreakerState.CLOSED
    assert br.failures == 1 and br.total_failures == 3


def test_released_trial_lets_another_trial_through() -> None:
    clock = ManualClock()
    br = CircuitBreaker("llm", failure_threshold=1, reset_timeout_s=1.0, clock=clock)
    br.record_failure()
    clock.advance(1.0)
    br.before_call()
    br.release()  # the trial was cancelled: no verdict
    br.before_call()
    assert br.state is BreakerState.HALF_OPEN


# --- ErrorRecoveryManager.call / with_retry ------------------------------------------------


async def test_transient_failure_is_retried_until_success() -> None:
    mgr = manager()
    flaky = Flaky(fail_times=2)
    assert await mgr.call("llm", flaky, 21) == 42
    assert flaky.calls == 3
    assert mgr.status()["llm"]["state"] == "closed"
    assert mgr.status()["llm"]["failures"] == 0


async def test_decorator_retries_and_raises_a_typed_error_with_cause() -> None:
    mgr = manager()
    flaky = Flaky(fail_times=99)

    @mgr.with_retry("llm")
    async def ask(x: int) -> int:
        return await flaky(x)

    with pytest.raises(ProviderError) as info:
        await ask(1)
    assert type(info.value) is ProviderError
    assert info.value.provider == "llm"
    assert "connection refused" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert flaky.calls == FAST.attempts
    assert ask.__name__ == "ask"


async def test_repeated_failures_open_the_circuit_then_calls_fail_fast() -> None:
    mgr = manager(failure_threshold=5)
    flaky = Flaky(fail_times=99)
    with pytest.raises(ProviderError) as first:
        await mgr.call("llm", flaky)
    assert not isinstance(first.value, CircuitOpenError)
    assert flaky.calls == 3
    # Two more failures reach the threshold; the third attempt is refused by the breaker.
    with pytest.raises(CircuitOpenError) as second:
        await mgr.call("llm", flaky)
    assert flaky.calls == 5
    assert isinstance(second.value.__cause__, ProviderError)
    with pytest.raises(CircuitOpenError):
        await mgr.call("llm", flaky)
    assert flaky.calls == 5  # fail fast: the provider is not touched
    st = mgr.status()["llm"]
    assert st["state"] == "open" and st["failures"] == 5 and st["opened_at"] is not None


async def test_half_open_recovery_after_reset_timeout() -> None:
    clock = ManualClock()
    mgr = manager(clock, failure_threshold=2)
    broken = Flaky(fail_times=99)
    with pytest.raises(CircuitOpenError):
        await mgr.call("tts", broken)
    clock.advance(10.0)
    assert mgr.status()["tts"]["state"] == "half_open"
    healthy = Flaky(fail_times=0)
    assert await mgr.call("tts", healthy, 5) == 10
    assert mgr.status()["tts"] == {
        "state": "closed",
        "failures": 0,
        "total_failures": 2,
        "opened_at": None,
        "retry_after_s": 0.0,
    }


async def test_failed_trial_after_reset_reopens_without_more_attempts() -> None:
    clock = ManualClock()
    mgr = manager(clock, failure_threshold=2)
    broken = Flaky(fail_times=99)
    with pytest.raises(CircuitOpenError):
        await mgr.call("tts", broken)
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError):
        await mgr.call("tts", broken)
    assert broken.calls == 3  # two to open, one trial
    assert mgr.status()["tts"]["state"] == "open"


async def test_breakers_are_per_provider() -> None:
    mgr = manager(failure_threshold=1)
    with pytest.raises(ProviderError):
        await mgr.call("stt", Flaky(fail_times=99))
    assert await mgr.call("llm", Flaky(fail_times=0), 2) == 4
    assert mgr.status()["stt"]["state"] == "open"
    assert mgr.status()["llm"]["state"] == "closed"


async def test_hung_call_times_out_as_provider_timeout_error() -> None:
    mgr = manager()
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeoutError) as info:
        await mgr.call("llm", hang, timeout_s=0.02)
    assert calls == FAST.attempts  # a timeout is retryable
    assert loop.time() - started < 1.0
    assert info.value.code == "provider_timeout"
    assert isinstance(info.value.__cause__, TimeoutError)
    assert mgr.status()["llm"]["failures"] == FAST.attempts


async def test_non_retryable_provider_error_is_raised_at_once() -> None:
    mgr = manager()
    flaky = Flaky(fail_times=99, exc=ModelNotReadyError("stt", "weights missing"))
    with pytest.raises(ModelNotReadyError):
        await mgr.call("stt", flaky)
    assert flaky.calls == 1
    assert mgr.status()["stt"]["failures"] == 1


async def test_retry_on_limits_which_errors_are_retried() -> None:
    mgr = manager()
    only_conn = RetryPolicy(attempts=3, base_delay_s=0.001, retry_on=(ConnectionError,))
    bug = Flaky(fail_times=99, exc=ValueError("bad input"))
    with pytest.raises(ProviderError) as info:
        await mgr.call("llm", bug, policy=only_conn)
    assert bug.calls == 1
    assert isinstance(info.value.__cause__, ValueError)


async def test_cancellation_is_neither_retried_nor_counted() -> None:
    mgr = manager()
    calls = 0
    entered = asyncio.Event()

    async def slow() -> None:
        nonlocal calls
        calls += 1
        entered.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(mgr.call("llm", slow, timeout_s=5.0))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
    assert mgr.status()["llm"]["failures"] == 0


async def test_backoff_sleeps_between_attempts() -> None:
    slept: list[float] = []

    async def record_sleep(s: float) -> None:
        slept.append(s)

    mgr = ErrorRecoveryManager(
        default_policy=RetryPolicy(attempts=4, base_delay_s=0.1, max_delay_s=1.0, jitter=False),
        sleep=record_sleep,
    )
    with pytest.raises(ProviderError):
        await mgr.call("llm", Flaky(fail_times=99))
    assert slept == pytest.approx([0.1, 0.2, 0.4])  # no sleep after the last attempt


# --- guard_stream --------------------------------------------------------------------------


class FlakyStream:
    """A stream factory: the first ``fail_before`` streams fail before any item."""

    def __init__(
        self, items: list[str], fail_before: int = 0, fail_after: int | None = None
    ) -> None:
        self.items = items
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.opened = 0
        self.closed = 0

    def __call__(self) -> AsyncIterator[str]:
        self.opened += 1
        return self._gen(self.opened)

    async def _gen(self, n: int) -> AsyncIterator[str]:
        try:
            await asyncio.sleep(0)
            if n <= self.fail_before:
                raise ConnectionError("stream broke early")
            for i, item in enumerate(self.items):
                if self.fail_after is not None and i == self.fail_after:
                    raise ConnectionError("stream broke midway")
                yield item
        finally:
            self.closed += 1


async def collect(agen: AsyncIterator[str]) -> list[str]:
    return [x async for x in agen]


async def test_stream_failure_before_first_item_is_retried() -> None:
    mgr = manager()
    factory = FlakyStream(["a", "b", "c"], fail_before=2)
    assert await collect(mgr.guard_stream("llm", factory)) == ["a", "b", "c"]
    assert factory.opened == 3 and factory.closed == 3
    assert mgr.status()["llm"]["failures"] == 0
    assert mgr.status()["llm"]["total_failures"] == 2


async def test_stream_failure_after_first_item_is_not_retried() -> None:
    mgr = manager()
    factory = FlakyStream(["a", "b", "c"], fail_after=2)
    got: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for item in mgr.guard_stream("tts", factory):
            got.append(item)
    assert got == ["a", "b"]  # no duplicate "a" from a second stream
    assert factory.opened == 1
    assert "midway" in str(info.value)
    assert mgr.status()["tts"]["failures"] == 1


async def test_stream_first_item_timeout() -> None:
    mgr = manager()
    opened = 0

    async def hung() -> AsyncIterator[str]:
        nonlocal opened
        opened += 1
        await asyncio.Event().wait()
        yield "never"

    with pytest.raises(ProviderTimeoutError):
        await collect(mgr.guard_stream("llm", hung, first_item_timeout_s=0.02))
    assert opened == FAST.attempts
    assert mgr.status()["llm"]["failures"] == FAST.attempts


async def test_stream_stalling_midway_times_out_without_retry() -> None:
    mgr = manager()

    async def stalls() -> AsyncIterator[str]:
        yield "hello"
        await asyncio.Event().wait()
        yield "never"

    got: list[str] = []
    with pytest.raises(ProviderTimeoutError):
        async for item in mgr.guard_stream("llm", stalls, item_timeout_s=0.02):
            got.append(item)
    assert got == ["hello"]


async def test_stream_opens_circuit_then_fails_fast() -> None:
    mgr = manager(failure_threshold=3)
    factory = FlakyStream(["a"], fail_before=99)
    with pytest.raises(ProviderError):
        await collect(mgr.guard_stream("llm", factory))
    with pytest.raises(CircuitOpenError):
        await collect(mgr.guard_stream("llm", factory))
    assert factory.opened == 3


async def test_closing_stream_early_closes_provider_and_counts_no_failure() -> None:
    mgr = manager()
    factory = FlakyStream(["a", "b", "c"])
    guarded = mgr.guard_stream("tts", factory)
    assert await anext(guarded) == "a"
    await guarded.aclose()  # barge-in
    assert factory.closed == 1
    assert mgr.status()["tts"]["failures"] == 0
    assert mgr.status()["tts"]["state"] == "closed"


async def test_cancelling_stream_consumer_is_not_retried() -> None:
    mgr = manager()
    opened = 0
    entered = asyncio.Event()

    async def slow() -> AsyncIterator[str]:
        nonlocal opened
        opened += 1
        entered.set()
        await asyncio.sleep(10)
        yield "late"

    task = asyncio.create_task(collect(mgr.guard_stream("llm", slow, first_item_timeout_s=5)))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert opened == 1
    assert mgr.status()["llm"]["failures"] == 0



# --- the failure log: one record per handled failure, with error_type and severity ----------


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="voice_agent.core.recovery")
    return caplog


def logged(log: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The recovery's failure records so far."""
    return [r for r in log.records if r.name == "voice_agent.core.recovery"]


def fields(record: logging.LogRecord) -> tuple[Any, ...]:
    f = record.__dict__  # the extra= fields
    return (f["error_type"], f["severity"], record.levelno, f["attempt"], f["will_retry"],
            f["circuit_opened"])


async def test_a_retried_failure_is_logged_low_with_the_provider_kind(
        log: pytest.LogCaptureFixture) -> None:
    mgr = manager()
    assert await mgr.call("whisper", Flaky(1), 3) == 6
    (record,) = logged(log)
    assert fields(record) == (ErrorType.STT, ErrorSeverity.LOW, logging.WARNING, 1, True, False)
    f = record.__dict__
    assert (f["provider"], f["provider_kind"], f["attempts"]) == ("whisper", ErrorType.STT, 3)
    assert 0 <= f["retry_in_s"] <= FAST.backoff_s(1)
    text = record.getMessage()
    assert text.startswith("stt provider whisper failed on attempt 1/3 "
                           "(error_type=stt, severity=low): whisper: connection refused; "
                           "retrying in "), text


async def test_a_final_failure_is_logged_high(log: pytest.LogCaptureFixture) -> None:
    mgr = manager(failure_threshold=10)
    with pytest.raises(ProviderError):
        await mgr.call("llamacpp", Flaky(99))
    records = logged(log)
    assert [fields(r) for r in records] == [
        (ErrorType.LLM, ErrorSeverity.LOW, logging.WARNING, 1, True, False),
        (ErrorType.LLM, ErrorSeverity.LOW, logging.WARNING, 2, True, False),
        (ErrorType.LLM, ErrorSeverity.HIGH, logging.ERROR, 3, False, False),
    ]
    assert records[-1].__dict__["retry_in_s"] is None
    assert records[-1].getMessage().endswith("; giving up (no attempt left)")
    # A failure a retry cannot help is final at once.
    with pytest.raises(ModelNotReadyError):
        await mgr.call("piper", Flaky(1, ModelNotReadyError("piper", "no voice")))
    last = logged(log)[-1]
    assert fields(last) == (ErrorType.TTS, ErrorSeverity.HIGH, logging.ERROR, 1, False, False)
    assert last.getMessage().endswith("; giving up (not retryable)")


async def test_a_timeout_is_logged_as_timeout_medium_then_high(
        log: pytest.LogCaptureFixture) -> None:
    mgr = manager(failure_threshold=10)
    retried, final = (ErrorType.TIMEOUT, ErrorSeverity.MEDIUM), (ErrorType.TIMEOUT,
                                                                 ErrorSeverity.HIGH)
    expected = [retried, retried, final]

    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(ProviderTimeoutError):
        await mgr.call("openai", hang, timeout_s=0.01)
    records = logged(log)
    assert [fields(r)[:2] for r in records] == expected
    assert {r.__dict__["provider_kind"] for r in records} == {ErrorType.LLM}
    assert "openai: no answer within 0.01s; retrying in " in records[0].getMessage()

    async def hung() -> AsyncIterator[str]:  # a stream whose first item never comes: the same
        await asyncio.Event().wait()
        yield "never"

    with pytest.raises(ProviderTimeoutError):
        await collect(mgr.guard_stream("espeak", hung, first_item_timeout_s=0.01))
    records = logged(log)[3:]
    assert [fields(r)[:2] for r in records] == expected
    assert {r.__dict__["provider_kind"] for r in records} == {ErrorType.TTS}


async def test_the_failure_that_opens_the_circuit_is_logged_critical(
        log: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    mgr = manager(clock, failure_threshold=2)
    with pytest.raises(CircuitOpenError):  # attempt 2 opens it, so attempt 3 is refused
        await mgr.call("llamacpp", Flaky(99))
    records = logged(log)
    assert [fields(r) for r in records] == [
        (ErrorType.LLM, ErrorSeverity.LOW, logging.WARNING, 1, True, False),
        (ErrorType.LLM, ErrorSeverity.CRITICAL, logging.CRITICAL, 2, True, True),
    ]
    assert records[-1].getMessage().endswith("; circuit opened")
    # Calls refused while it is open are no provider failures: nothing more is logged.
    with pytest.raises(CircuitOpenError):
        await mgr.call("llamacpp", Flaky(99))
    assert len(logged(log)) == 2
    # The failed trial after the cool-down re-opens it: critical again.
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError):
        await mgr.call("llamacpp", Flaky(99))
    records = logged(log)
    assert len(records) == 3
    assert fields(records[-1])[:2] == (ErrorType.LLM, ErrorSeverity.CRITICAL)
    assert records[-1].__dict__["circuit_opened"] is True


async def test_a_stream_failing_after_its_first_item_is_logged_high(
        log: pytest.LogCaptureFixture) -> None:
    mgr = manager()
    factory = FlakyStream(["a", "b", "c"], fail_before=1, fail_after=1)
    with pytest.raises(ProviderError):
        await collect(mgr.guard_stream("piper", factory))
    records = logged(log)
    assert [fields(r) for r in records] == [
        (ErrorType.TTS, ErrorSeverity.LOW, logging.WARNING, 1, True, False),
        (ErrorType.TTS, ErrorSeverity.HIGH, logging.ERROR, 2, False, False),
    ]
    assert records[-1].getMessage().endswith("; giving up (the stream had started)")


async def test_the_kind_comes_from_the_argument_or_else_the_name(
        log: pytest.LogCaptureFixture) -> None:
    mgr = manager()
    await mgr.call("my-asr", Flaky(1), kind=ErrorType.STT)
    await mgr.call("my-asr", Flaky(1))  # a name no prefix matches
    await collect(mgr.guard_stream("my-voice", FlakyStream(["a"], fail_before=1),
                                   kind=ErrorType.TTS))
    assert [r.__dict__["error_type"] for r in logged(log)] == [
        ErrorType.STT, ErrorType.INTERNAL, ErrorType.TTS]


def test_the_built_in_provider_names_tell_their_kind() -> None:
    from voice_agent.services import registry  # tests may import services; core may not

    built_in = {"stt": ["whisper"], "llm": ["llamacpp", "openai"], "tts": ["piper", "espeak"]}
    for kind, names in built_in.items():
        for name in names:
            assert name in registry.names(kind), (kind, name)  # type: ignore[arg-type]
            assert provider_kind(name) is ErrorType(kind), name
    assert provider_kind("LLM-fake") is ErrorType.LLM
    assert provider_kind("silero") is ErrorType.INTERNAL  # the VAD is not called through here


def test_the_cloud_providers_tell_their_kind() -> None:
    """The breakers and the recovery log name them by their service ``name``."""
    from voice_agent.services.llm_groq import GroqLLM
    from voice_agent.services.openai_audio import OpenAICompatibleSTT, OpenAICompatibleTTS
    from voice_agent.services.stt_deepgram import DeepgramSTT
    from voice_agent.services.tts_elevenlabs import ElevenLabsTTS

    kinds = {DeepgramSTT: ErrorType.STT, OpenAICompatibleSTT: ErrorType.STT, GroqLLM: ErrorType.LLM,
             ElevenLabsTTS: ErrorType.TTS, OpenAICompatibleTTS: ErrorType.TTS}
    for service, kind in kinds.items():
        assert provider_kind(service.name) is kind, service.name
