"""ElevenLabs' streaming API on the wire, for services/tts_elevenlabs.py (whose docstring
describes the protocol): the WebSocket and HTTP roots, the PCM audio it answers, its JSON
messages and error bodies, a rejected key, and a socket's close.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from voice_agent.core.errors import ProviderError
from voice_agent.services.base import AudioChunk

KEY_HINT = "voice.api_key, env VOICE_AGENT_VOICE__API_KEY"
CLOSE_TIMEOUT_S = 0.5
_KEY_WORDS = ("api key", "api_key", "apikey", "unauthori", "authenticat", "xi-api-key")


def roots(base_url: str) -> tuple[str, str]:
    """(WebSocket root, HTTP root) of ``base_url``: ws:// pairs with http://, wss:// with
    https://, whichever of the pair was given (as ElevenLabs' SDKs derive one from the other)."""
    parts = urlsplit(base_url)
    secure = parts.scheme.lower() in ("wss", "https")
    rest = parts.netloc + parts.path.rstrip("/")
    return ("wss://" if secure else "ws://") + rest, ("https://" if secure else "http://") + rest


def rejected_key(provider: str, detail: str) -> ProviderError:
    return ProviderError(provider, f"the API key was rejected ({detail}): check {KEY_HINT}",
                         retryable=False)


def looks_like_key_problem(text: str) -> bool:
    text = text.lower()
    return any(word in text for word in _KEY_WORDS)


class _Pcm:
    """16-bit little-endian PCM bytes to int16 arrays; an odd byte waits for the next piece."""

    def __init__(self, rate: int) -> None:
        self.rate, self._carry = rate, b""

    def chunk(self, data: bytes) -> AudioChunk | None:
        data = self._carry + data
        cut = len(data) - len(data) % 2
        self._carry = data[cut:]
        if not cut:
            return None
        pcm = np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)
        return AudioChunk(pcm=pcm, sample_rate=self.rate)


def _message(raw: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(raw)
    except ValueError:
        return {"error": "a message that is not JSON"}
    return msg if isinstance(msg, dict) else {"error": "a message that is not an object"}


def _detail(body: str | bytes) -> str:
    """A short, printable reason from an error body (ElevenLabs: ``{"detail": {"status",
    "message"}}``)."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        detail = json.loads(text).get("detail")
        if isinstance(detail, dict):
            return f"{detail.get('status', '')}: {detail.get('message', '')}".strip(": ")[:200]
        if detail:
            return str(detail)[:200]
    except (ValueError, AttributeError):
        pass
    return text.strip()[:200]


async def _close(ws: Any) -> None:
    """Close the socket within CLOSE_TIMEOUT_S (a close handshake), else drop the connection."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close()
    except (TimeoutError, OSError):
        ws.transport.abort()
    except Exception:  # a socket already gone has nothing left to close
        pass
