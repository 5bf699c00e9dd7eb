"""Deepgram's live API on the wire, for services/stt_deepgram.py (whose docstring describes the
protocol): the listen URL, audio as linear16, the JSON control messages out and the answers in
(their transcript, times and errors), and a connection's loss and close.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from voice_agent.core.errors import ProviderError

log = logging.getLogger("voice_agent.services.stt_deepgram")

CLOSE_S = 0.5
"""How long closing a connection may wait for Deepgram's side of it."""

KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})


def listen_url(base_url: str, params: dict[str, Any]) -> str:
    """``{base_url}/v1/listen?{params}``; http(s) roots become ws(s), as Deepgram's SDKs do."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    path = parts.path.rstrip("/") + "/v1/listen"
    return urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))


def to_linear16(audio: np.ndarray) -> bytes:
    """float32 [-1, 1] → little-endian int16 bytes."""
    pcm = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0
    return pcm.astype("<i2").tobytes()


def _closed_errors() -> tuple[type[BaseException], ...]:
    from websockets.exceptions import ConnectionClosedError
    return (ConnectionClosedError,)


def _lost(provider: str, exc: BaseException) -> ProviderError:
    rcvd = getattr(exc, "rcvd", None)
    why = f" (close {rcvd.code} {rcvd.reason})".rstrip() if rcvd is not None else ""
    return ProviderError(provider, f"connection to Deepgram lost{why}")


def _error_message(provider: str, msg: dict[str, Any]) -> ProviderError:
    detail = str(msg.get("description") or msg.get("message") or msg.get("err_msg") or "")[:200]
    return ProviderError(provider, f"Deepgram error: {detail or 'unknown'}")


async def _close(ws: Any) -> None:
    try:
        async with asyncio.timeout(CLOSE_S * 2):
            await ws.close()
    except Exception:  # closing: nothing is left to save
        pass


def _json(message: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(message)
    except (ValueError, TypeError):
        log.debug("skipping a message that is not JSON: %.80r", message)
        return {}
    return msg if isinstance(msg, dict) else {}


def _transcript(msg: dict[str, Any]) -> str:
    try:
        text = msg["channel"]["alternatives"][0]["transcript"]
    except (KeyError, IndexError, TypeError):
        return ""
    return text.strip() if isinstance(text, str) else ""


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
