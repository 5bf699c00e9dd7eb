"""Session state and statuses shared by every transport."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ConnectionStatus(str, Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"


class ProcessingStatus(str, Enum):
    IDLE = "idle"
    LISTENING = "listening"
    PROCESSING = "processing"
    SPEAKING = "speaking"
    ERROR = "error"


class ErrorSeverity(str, Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ErrorType(str, Enum):
    VALIDATION = "validation"
    PROTOCOL = "protocol"
    TRANSPORT = "transport"
    STT = "stt"
    LLM = "llm"
    TTS = "tts"
    TIMEOUT = "timeout"
    CAPACITY = "capacity"
    AUTH = "auth"
    INTERNAL = "internal"


@dataclass
class SessionInfo:
    """What the server knows about one conversation; ``as_dict`` is what /v3/sessions shows."""

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    transport: str = "webrtc"
    started_at: float = field(default_factory=time.time)
    connection_status: ConnectionStatus = ConnectionStatus.CONNECTING
    processing_status: ProcessingStatus = ProcessingStatus.IDLE
    messages_processed: int = 0
    errors: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    worker: str | None = None
    """The worker holding the session's connection (server.worker_id)."""

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    @property
    def duration_s(self) -> float:
        return time.time() - self.started_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "transport": self.transport,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "connection_status": self.connection_status.value,
            "processing_status": self.processing_status.value,
            "messages_processed": self.messages_processed,
            "errors": self.errors,
            "worker": self.worker,
        }
