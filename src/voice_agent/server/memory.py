"""Keeping the server's resident memory flat across many sessions.

Why: every session runs Whisper, the LLM and Piper in worker threads, and glibc gives threads
their own malloc arenas (up to 8 per core). Freed buffers (audio, Opus, transcripts) stay in
those arenas as free but resident pages, so RSS creeps up with each new mix of threads and
sizes, although no object leaks. Fewer arenas and a trim after each session hand that memory
back to the kernel. Elsewhere (musl, macOS) both calls are no-ops. A session's objects that
form reference cycles are collected when it closes, not at the next rare full collection.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # from glibc's malloc.h


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas (``MALLOC_ARENA_MAX``) for threads made from now on. 0 leaves
    glibc's default. Call before the models load. Returns True when the cap was set."""
    libc = _libc()
    if count <= 0 or libc is None:
        return False
    ok = bool(libc.mallopt(_M_ARENA_MAX, count))
    log.info("malloc arenas limited to %d: %s", count, "ok" if ok else "refused")
    return ok


def freeze_startup_objects() -> None:
    """Move every object alive now (the loaded models, modules) out of the garbage collector's
    view, so that a full collection after a session only walks what sessions made: milliseconds
    instead of a pause the other sessions would hear."""
    gc.collect()
    gc.freeze()


def after_session() -> None:
    """Free what a closed session left in reference cycles (its buffers would otherwise wait for
    a rare full collection: the soak saw RSS climb ~2 MB per session, then drop by 200 MB at
    once), then hand the freed heap back to the kernel."""
    t0 = time.perf_counter()
    found = gc.collect()
    release_free_memory()
    log.debug("after session: %d unreachable objects, %.1f ms", found,
              (time.perf_counter() - t0) * 1000)


def release_free_memory() -> bool:
    """Give free heap pages of every arena back to the kernel (``malloc_trim(0)``); takes a few
    milliseconds on a large heap, so call it off the event loop. True when memory was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def memory_report() -> dict[str, Any]:
    """Resident memory, and how much of glibc's heap is in use or free but kept: growth of
    ``heap_in_use_mb`` is live allocations (a leak, or a cache), growth of ``heap_free_mb``
    is memory the allocator holds on to."""
    out: dict[str, Any] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = {"VmRSS:": "rss_mb", "VmHWM:": "peak_rss_mb"}.get(line[:6])
                if key:
                    out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    libc = _libc()
    mallinfo2 = getattr(libc, "mallinfo2", None) if libc is not None else None
    if mallinfo2 is not None:  # glibc 2.33+
        mallinfo2.restype = _MallInfo2
        info = mallinfo2()
        mb = 1024 * 1024
        out["heap_in_use_mb"] = round((info.uordblks + info.hblkhd) / mb, 1)
        out["heap_free_mb"] = round(info.fordblks / mb, 1)
    return out
