"""Wire protocol: client messages (validated) and server message builders.

Every message is a JSON object with a ``type`` field; docs/protocol.md describes them all. Unknown
extra fields are ignored so that newer clients keep working with this server.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from .. import __version__

MAX_TEXT_CHARS = 4000
"""Longest typed message; a turn of speech is far shorter than this."""
MAX_SDP_CHARS = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
MAX_RESUME_TOKEN_CHARS = 256
"""Longest ``resume`` token accepted as a string; the server's own are 43 characters."""
"""Deepest nesting of objects and arrays in a client message; ours nest three levels. Python's
JSON parser raises RecursionError near 1000 levels (2 KB of brackets), which is no ValueError."""


class ErrorCode:
    """Error codes sent in ``{"type": "error", "code": ...}``; listed in docs/protocol.md."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    INVALID_SDP = "invalid_sdp"
    DUPLICATE_OFFER = "duplicate_offer"
    NO_OFFER = "no_offer"
    INVALID_CANDIDATE = "invalid_candidate"
    UNSUPPORTED = "unsupported"
    SERVER_BUSY = "server_busy"
    """Fatal, close 1013: the models are still loading (before ``busy`` existed, also: full)."""
    BUSY = "busy"
    """Fatal, close 1013: every session slot (``server.max_sessions``) is taken."""
    UNAUTHORIZED = "unauthorized"
    SESSION_TIMEOUT = "session_timeout"
    INTERNAL = "internal_error"
    RESUME_FAILED = "resume_failed"
    """Not fatal: the ``resume`` token is unknown, expired or malformed, the conversation had
    already begun, or the store is unreachable; the session goes on as a new conversation."""


class ProtocolError(Exception):
    """A client message was refused; ``code`` is one of :class:`ErrorCode`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Message(BaseModel):
    # Strict: a field of the wrong JSON type is an error, not coerced (``"timestamp": false``
    # is not 0.0, ``"sdpMLineIndex": "0"`` is not 0). Numbers may still be ints or floats.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class IceCandidateInit(_Message):
    """The browser's RTCIceCandidateInit."""

    candidate: str = ""
    sdpMid: str | None = None
    sdpMLineIndex: int | None = Field(None, ge=0, le=1024)
    usernameFragment: str | None = None


class OfferMessage(_Message):
    type: Literal["offer"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)


class IceCandidateMessage(_Message):
    type: Literal["ice-candidate"]
    candidate: IceCandidateInit | None = None

    @property
    def end_of_candidates(self) -> bool:
        """A null candidate or an empty candidate string means the client has no more."""
        return self.candidate is None or not self.candidate.candidate.strip()


class TextMessage(_Message):
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("text must not be blank")
        return v


class InterruptMessage(_Message):
    type: Literal["interrupt"]


class PingMessage(_Message):
    type: Literal["ping"]
    timestamp: float | None = Field(None, allow_inf_nan=False)
    """Echoed back in the pong, so the client can measure the round trip."""


class EndMessage(_Message):
    type: Literal["end"]


class ResumeMessage(_Message):
    """Carry on an earlier conversation: ``token`` is the ``resume_token`` an earlier session's
    ``connection_established`` (or ``resumed``) gave. Answered with ``resumed`` or a non-fatal
    ``resume_failed``; the token is checked by the server (server/resume_store.py), not here, so a
    malformed one gets ``resume_failed`` too."""

    type: Literal["resume"]
    token: str = Field(min_length=1, max_length=MAX_RESUME_TOKEN_CHARS)


ClientMessage = Annotated[
    Union[OfferMessage, IceCandidateMessage, TextMessage, InterruptMessage, PingMessage, EndMessage,
          ResumeMessage],
    Field(discriminator="type"),
]
CLIENT_MESSAGE_TYPES = ("offer", "ice-candidate", "text", "interrupt", "ping", "end", "resume")
_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"][1:]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class _NotJSON(ValueError):
    """A number JSON cannot carry (RFC 8259 has no NaN or Infinity)."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"number {text[:32]} is out of range")
    return value


def _depth(data: Any) -> int:
    """How deep objects and arrays nest, without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            todo.extend((v, depth + 1) for v in value)
    return deepest


def _loads(raw: str | bytes) -> Any:
    """``json.loads`` that refuses what a browser's ``JSON.parse`` would not give back: bare
    ``NaN``/``Infinity`` and numbers that overflow to them (echoed, they would break the
    client), and nesting deep enough to exhaust the parser's recursion."""
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except _NotJSON as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE,
                            f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE,
                            f"nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def parse_client_message(
    raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Validate one client message; raise :class:`ProtocolError` saying what is wrong."""
    size = len(raw)
    if isinstance(raw, str) and 4 * size > max_bytes:  # up to 4 bytes a character in UTF-8
        size = len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE,
                            f"message of {size} bytes exceeds the limit of {max_bytes}")
    data = _loads(raw)
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message needs a string 'type' field")
    if kind not in CLIENT_MESSAGE_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"bad '{kind}' message: {_summarise(exc)}") \
            from None


# --- server -> client -------------------------------------------------------------------------

def connection_established(session_id: str, *, transport: str = "webrtc",
                           mode: str | None = None,
                           resume_token: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "connection_established", "session_id": session_id,
                           "status": "connected", "version": __version__, "transport": transport}
    if mode is not None:
        msg["mode"] = mode
    if resume_token is not None:
        msg["resume_token"] = resume_token
    return msg


def resumed(resume_token: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to ``resume``: the conversation carried over (oldest first), and the token
    that resumes it from now on."""
    return {"type": "resumed", "resume_token": resume_token, "history": history}


def answer(sdp: str) -> dict[str, Any]:
    return {"type": "answer", "sdp": sdp}


def ice_candidate(candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> dict[str, Any]:
    return {"type": "ice-candidate",
            "candidate": {"candidate": candidate, "sdpMid": sdp_mid,
                          "sdpMLineIndex": sdp_mline_index}}


def status(connection_status: str, processing_status: str) -> dict[str, Any]:
    return {"type": "status", "connection_status": connection_status,
            "processing_status": processing_status}


def pong(timestamp: float | None, server_time: float) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "pong", "server_time": server_time}
    if timestamp is not None:
        msg["timestamp"] = timestamp
    return msg


def error(code: str, message: str, *, fatal: bool = False) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}
