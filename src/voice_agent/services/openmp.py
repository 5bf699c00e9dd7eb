"""How the models' OpenMP threads wait: spin on a core, or sleep.

Whisper (CTranslate2, which bundles its own libgomp) and llama.cpp (the system libgomp) run
their work on OpenMP thread pools. Each libgomp reads its settings from the environment once,
when it is loaded, so these are set before the first model loads and only where the user has
not set them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def set_spin_count(count: int | None) -> None:
    """``GOMP_SPINCOUNT`` for every libgomp the process loads from now on (None: leave the
    library's default, ~300,000 spins, some 15 ms on this Xeon). A thread that waits, for a
    barrier inside a token or for the next piece of work, spins this many times before it
    sleeps; a short spin keeps a barrier quick while both threads run, and frees the core at
    once when the other thread was put off it by another library's work."""
    if count is None or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = str(count)
    log.debug("OpenMP threads spin %d times before they sleep", count)


@contextlib.contextmanager
def wait_policy_while_loading(policy: str | None) -> Iterator[None]:
    """``OMP_WAIT_POLICY`` while one library loads (CTranslate2: its own libgomp reads it
    then), so that the policy applies to that library's threads alone. Nothing changes when
    the variable is already set (the user's choice covers every library) or when the library
    was loaded before."""
    if policy is None or "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = policy
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
