"""Benchmarks for the voice agent: a real aiortc client measuring voice-to-voice latency."""
