"""Local-first real-time voice agent."""

import os

# numpy's OpenBLAS starts its worker threads when numpy is imported, on the importing (event
# loop) thread and at its priority, where they would compete with the loop for the cores
# (core/priority.py). numpy's matrix work here is small (Whisper's mel filter): the calling
# model thread does it alone. Set before anything imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
