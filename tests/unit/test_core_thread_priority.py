"""Model threads run nicer than the event loop; the LLM's may run nicer still, so that the
short calls a user waits for (Whisper, Piper) get the cores first (server.llm_threads_nice)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from voice_agent.core.priority import in_nicer_thread, model_executor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_threads_started_inside_inherit_the_lower_priority() -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    seen: list[int] = []

    def start_a_library_thread() -> int:
        inner = threading.Thread(target=lambda: seen.append(_own_nice()))
        inner.start()
        inner.join()
        return _own_nice()

    assert in_nicer_thread(start_a_library_thread, 3) == min(19, base + 3)
    assert seen == [min(19, base + 3)]  # the library's own thread, made inside
    assert _own_nice() == base  # the caller is left as it was


def test_an_error_inside_reaches_the_caller() -> None:
    def fail() -> None:
        raise ValueError("cannot load")

    with pytest.raises(ValueError, match="cannot load"):
        in_nicer_thread(fail, 2)


def test_a_nicer_thread_made_from_a_model_thread_goes_further_down() -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    with model_executor("model-load", 2) as loader:
        nices = loader.submit(lambda: (_own_nice(), in_nicer_thread(_own_nice, 5))).result()
    assert nices == (min(19, base + 2), min(19, base + 5))
