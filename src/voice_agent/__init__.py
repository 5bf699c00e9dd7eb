"""Local-first real-time voice agent."""

__version__ = "0.1.0"
