"""Model threads run nicer than the event loop, so the loop gets a core when it needs one.

Every session's audio (RTP in and out, ICE consent, VAD) runs on the one event-loop thread, which
needs ~0.1 of a core per session but needs it within milliseconds. On 2 cores it shares the CPU
with six busy model threads (llama.cpp, CTranslate2, onnxruntime): at equal priority the kernel
let it wait up to ~190 ms under 4 sessions, and the listener heard the gap. On Linux nice is per
thread and inherited by the threads a thread creates, so models loaded and run in threads made
here carry the lower priority into their libraries' own thread pools. Raising nice needs no
privilege; it is never lowered back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def lower_thread_priority(steps: int) -> None:
    """Make the calling thread ``steps`` nicer than the process's main thread (no-op for 0, and
    where threads have no nice of their own)."""
    if steps <= 0 or not sys.platform.startswith("linux"):
        return  # elsewhere setpriority(PRIO_PROCESS, tid) would name a process, not a thread
    try:
        tid = threading.get_native_id()
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + steps)
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:  # a sandbox without the call: run at normal priority
        log.debug("cannot lower the priority of thread %s: %s", threading.current_thread().name, exc)


def in_nicer_thread(fn: Callable[[], T], nice: int) -> T:
    """``fn()`` run in a new thread ``nice`` steps below the event loop, so that the threads a
    library starts inside it (llama.cpp's server loop and its OpenMP team) inherit that
    priority; its result or exception comes back here."""
    out: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        lower_thread_priority(nice)
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=run, name="nicer-load")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return out[0]


def model_executor(name: str, nice: int) -> ThreadPoolExecutor:
    """One worker thread for one model's calls, ``nice`` steps below the event loop."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                              initializer=lower_thread_priority, initargs=(nice,))
