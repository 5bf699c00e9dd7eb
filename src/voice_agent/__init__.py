"""Local-first real-time voice agent."""

import os

# numpy's OpenBLAS starts its worker threads when numpy is imported, on the importing (event
# loop) thread and at its priority, where they would compete with the loop for the cores
# (core/priority.py). numpy's matrix work here is small (Whisper's mel filter): the calling
# model thread does it alone. Set before anything imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ``import voice_agent; @voice_agent.tool``: loaded on first use, so that importing the
    # package stays as light as it was.
    if name == "tool":
        from .tools import tool
        return tool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
