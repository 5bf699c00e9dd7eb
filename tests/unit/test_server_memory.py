"""Memory handed back after sessions: glibc's malloc_trim really lowers RSS, and the session
manager runs the clean-up once per closed session without letting it break a close."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import weakref

import pytest

from voice_agent.server.memory import after_session, limit_arenas, memory_report, release_free_memory
from voice_agent.server.sessions import SessionManager

glibc = pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="needs glibc")


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@glibc
def test_release_free_memory_returns_freed_heap_pages() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before: list[int] = []

    def churn() -> None:
        # What a model thread does: many mid-sized buffers in its own arena, freed again. The
        # last one stays, so glibc cannot shrink the heap from its top by itself.
        blocks = [libc.malloc(8192) for _ in range(12_000)]
        for b in blocks:
            ctypes.memset(b, 1, 8192)  # touch: make the pages resident
        for b in blocks[:-1]:
            libc.free(b)
        before.append(rss_kb())
        assert release_free_memory()
        before.append(rss_kb())
        libc.free(blocks[-1])

    t = threading.Thread(target=churn)
    t.start()
    t.join()
    held, after = before
    assert held - after > 60_000, (held, after)  # ~94 MB freed but resident → given back


@glibc
def test_limit_arenas_is_accepted() -> None:
    assert limit_arenas(2) is True
    assert limit_arenas(0) is False  # 0 means: leave glibc's default


async def test_after_close_runs_once_per_closed_session_and_cannot_break_a_close() -> None:
    calls: list[str] = []

    def cleanup() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise RuntimeError("clean-up failed")

    mgr = SessionManager(max_sessions=3, idle_timeout_s=60, max_session_s=60, after_close=cleanup)
    a, b = mgr.create(), mgr.create()
    await mgr.close(a.id)
    await mgr.close(a.id)  # already gone: nothing to clean up
    await mgr.close(b.id)  # its clean-up raises; the close still completes
    assert len(calls) == 2 and len(mgr) == 0 and b.closed.is_set()
    assert threading.main_thread().name not in calls  # off the event loop's thread


@glibc
def test_memory_report_tells_live_heap_from_free_heap() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = memory_report()
    blocks = [libc.malloc(16384) for _ in range(4000)]  # ~64 MB of live heap
    live = memory_report()
    for b in blocks[:-1]:
        libc.free(b)
    freed = memory_report()
    libc.free(blocks[-1])
    assert live["heap_in_use_mb"] - before["heap_in_use_mb"] > 55, (before, live)
    assert live["heap_in_use_mb"] - freed["heap_in_use_mb"] > 55, (live, freed)
    assert freed["rss_mb"] > 0 and freed["peak_rss_mb"] >= freed["rss_mb"]


def test_after_session_frees_what_a_session_left_in_reference_cycles() -> None:
    class Part:  # a pipeline and its transport pointing at each other, holding audio
        def __init__(self) -> None:
            self.audio = bytearray(20_000_000)
            self.peer: Part | None = None

    a, b = Part(), Part()
    a.peer, b.peer = b, a
    gone = weakref.ref(a)
    gc.disable()  # as if no automatic collection came along before the session ended
    try:
        del a, b
        assert gone() is not None  # a cycle: reference counting alone cannot free it
        after_session()
        assert gone() is None
    finally:
        gc.enable()
