"""Resumable conversations: a session's history kept under a secret token, so that a client whose
connection dropped (or whose worker died, ``kill -9`` included) carries the conversation on in
a new session, on this worker or any other.

- Every session gets a fresh token (``secrets.token_urlsafe``, 256 bits) in its
  ``connection_established`` (``resume_token``). After each finished turn the session's history
  (:meth:`ConversationManager.export`: what the user said, the replies, of a cut reply the part
  heard and the whole text the model wrote) is saved under it, whole, replacing the last copy.
- A new session's client sends ``{"type": "resume", "token": ...}`` with the token it holds,
  before the conversation's first turn: the history is loaded into the new session's
  conversation (the LLM's context), saved under the new session's token, and sent back in
  ``resumed`` with that token, which resumes it from now on. The old token is then retired:
  it stays usable for :data:`RETIRED_GRACE_S` (an answer lost in a second drop may be asked
  for again), then expires. Each session thus writes only its own key: two clients resuming
  one token get two conversations, never one overwriting the other.
- Anything else (a malformed, unknown or expired token, a conversation already under way, the
  store unreachable) is a non-fatal ``resume_failed`` and the session goes on as a new
  conversation.

Where: Redis when ``server.redis_url`` is set (every worker reads what any other saved), else
this process's memory (a client reconnecting to the same process after a network drop still
resumes; nothing survives the process). Redis is the worker's one client (redis_link.py, shared
with cluster.py). Redis down: logged once for the worker (and once when it is back), sessions
go on, saves are skipped (the next one writes the whole history again) and resumes fail with
``resume_failed``. Every Redis call is bounded (short socket timeouts, one retry, an overall
deadline: :data:`REDIS_CALL_TIMEOUT_S`), so a dead Redis never holds a turn or a session up.

Time to live: :data:`RESUME_TTL_S`, one hour from the last save, the default
``server.max_session_s``: a conversation a session could still be holding is never expired
under it, and a page that drops or reloads comes back within seconds to minutes, far inside
it. Longer would only keep finished conversations around (in Redis: memory nobody frees).

Secrecy: the token is a bearer secret for the conversation. It is never logged, never in
``/v3/sessions`` or the transcripts, and Redis keys are its SHA-256 (``voice-agent:resume:<hex>``):
reading Redis gives the conversations but no token that resumes them. Sizes are bounded: at
most :data:`MAX_MESSAGES` messages of :data:`MAX_TEXT_CHARS` characters and :data:`MAX_BYTES`
per conversation (the oldest messages go first), and :data:`MEMORY_MAX_CONVERSATIONS`
conversations in memory (the least recently saved go first).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.conversation import ASSISTANT, USER
from .registry import get_registry

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .redis_link import RedisLink

log = logging.getLogger(__name__)
T = TypeVar("T")

RESUME_TTL_S = 3600.0
"""A saved conversation expires this long after its last save (see the module's docstring)."""
RETIRED_GRACE_S = 60.0
"""A token whose conversation another session resumed stays usable this much longer."""
TOKEN_BYTES = 32
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32): 43 characters, no padding
MAX_MESSAGES = 500
"""Messages kept per conversation (``ai.history_messages`` is at most 500)."""
MAX_TEXT_CHARS = 8000
"""Characters kept of one message (typed text is at most 4000)."""
MAX_BYTES = 128 * 1024
"""Largest saved conversation (UTF-8 JSON); the oldest messages are left out to fit."""
MEMORY_MAX_CONVERSATIONS = 128
"""Conversations the in-memory store keeps (without Redis); the least recently saved go."""
# Unchanged key names: during a rolling upgrade, conversations the old version saved resume.
KEY_PREFIX = "voice-agent:resume:"
REDIS_CALL_TIMEOUT_S = 1.5
"""One store call, its one retry included, takes no longer than this (the socket timeouts
are redis_link.py's)."""
FORMAT_VERSION = 1


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class ResumeError(Exception):
    """A resume that cannot be done; ``reason``: ``invalid`` (not a token of ours),
    ``unknown`` (never saved, expired or retired), ``corrupt`` (unreadable), ``unavailable``
    (the store cannot be reached), ``started`` (this session's conversation began)."""

    MESSAGES = {
        "invalid": "the resume token is malformed",
        "unknown": "the resume token is unknown or expired",
        "corrupt": "the saved conversation could not be read",
        "unavailable": "conversations cannot be resumed right now (the store is unreachable)",
        "started": "a conversation can only be resumed before its first turn, once",
    }

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.message = self.MESSAGES.get(reason, reason)
        super().__init__(self.message)


# -- the saved form ------------------------------------------------------------------------------

def _clean(item: Any) -> dict[str, Any] | None:
    """One message as it is saved, or None when it is not one."""
    if not isinstance(item, dict):
        return None
    role, text = item.get("role"), item.get("text")
    if role not in (USER, ASSISTANT) or not isinstance(text, str) or not text.strip():
        return None
    out: dict[str, Any] = {"role": role, "text": text.strip()[:MAX_TEXT_CHARS],
                           "interrupted": item.get("interrupted") is True}
    stamp = item.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp):
        out["timestamp"] = float(stamp)
    written = item.get("written")
    if out["interrupted"] and isinstance(written, str) and written.strip():
        out["written"] = written.strip()[:MAX_TEXT_CHARS]
    return out


def encode(history: list[dict[str, Any]]) -> bytes:
    """The history as saved: the newest messages that fit :data:`MAX_MESSAGES` and
    :data:`MAX_BYTES`, oldest first."""
    items = [c for c in map(_clean, history) if c is not None][-MAX_MESSAGES:]
    kept: list[dict[str, Any]] = []
    size = 64  # the envelope
    for item in reversed(items):
        size += len(json.dumps(item, ensure_ascii=False).encode("utf-8")) + 2
        if size > MAX_BYTES:
            break
        kept.append(item)
    kept.reverse()
    return json.dumps({"v": FORMAT_VERSION, "history": kept},
                      ensure_ascii=False).encode("utf-8")


def decode(raw: bytes | str) -> list[dict[str, Any]]:
    """A saved history; :class:`ResumeError` ``corrupt`` when it is not one."""
    if len(raw) > 2 * MAX_BYTES:
        raise ResumeError("corrupt")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ResumeError("corrupt") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION \
            or not isinstance(data.get("history"), list):
        raise ResumeError("corrupt")
    return [c for c in map(_clean, data["history"][-MAX_MESSAGES:]) if c is not None]


def client_view(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history as ``resumed`` shows it: role, text (of a cut reply: what was heard),
    interrupted, and ``full_text`` (the whole reply) for a cut one."""
    out = []
    for item in history:
        entry = {"role": item["role"], "text": item["text"], "interrupted": item["interrupted"]}
        if item.get("written"):
            entry["full_text"] = item["written"]
        out.append(entry)
    return out


# -- stores --------------------------------------------------------------------------------------

class ConversationStore:
    """Save, load and retire a conversation's history by token. Subclasses keep the bytes."""

    backend = "none"

    def __init__(self, *, ttl_s: float = RESUME_TTL_S, grace_s: float = RETIRED_GRACE_S) -> None:
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}

    # the backend: bytes by key, with a time to live
    async def _set(self, key: str, data: bytes, ttl_s: float) -> None:
        raise NotImplementedError

    async def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def _expire(self, key: str, ttl_s: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.drain()

    # the API
    async def save(self, token: str, history: list[dict[str, Any]]) -> None:
        """Replace the conversation saved under ``token``; its time to live starts again."""
        await self._set(_digest(token), encode(history), self.ttl_s)

    async def load(self, token: str) -> list[dict[str, Any]]:
        """The history saved under ``token``; :class:`ResumeError` when there is none."""
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise ResumeError("invalid")
        raw = await self._get(_digest(token))
        if raw is None:
            raise ResumeError("unknown")
        return decode(raw)

    async def retire(self, token: str) -> None:
        """Another session carries this conversation on: it expires after the grace time."""
        await self._expire(_digest(token), self.grace_s)

    def save_soon(self, token: str, history: list[dict[str, Any]]) -> None:
        """Save in the background (a turn never waits on the store); saves of one token are
        written in order, and while one is on its way only the newest waiting one is kept."""
        self._pending[token] = history
        if token in self._writers:
            return
        task = asyncio.get_running_loop().create_task(self._write(token), name="resume-save")
        self._writers[token] = task

    async def _write(self, token: str) -> None:
        try:
            while token in self._pending:
                history = self._pending.pop(token)
                try:
                    await self.save(token, history)
                except ResumeError:
                    pass  # the store said so once; the next save writes everything again
                except Exception:
                    log.exception("resume store: saving a conversation failed")
        finally:
            self._writers.pop(token, None)

    async def flush(self, token: str) -> None:
        """Wait until the saves of ``token`` on their way are written (or failed)."""
        while (task := self._writers.get(token)) is not None:
            await asyncio.gather(asyncio.shield(task), return_exceptions=True)

    async def drain(self) -> None:
        """Wait for the background saves on their way."""
        while self._writers:
            await asyncio.gather(*list(self._writers.values()), return_exceptions=True)


class MemoryConversationStore(ConversationStore):
    """This process's memory: a client reconnecting to the same process resumes."""

    backend = "memory"

    def __init__(self, *, ttl_s: float = RESUME_TTL_S, grace_s: float = RETIRED_GRACE_S,
                 max_conversations: int = MEMORY_MAX_CONVERSATIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_s=ttl_s, grace_s=grace_s)
        self.max_conversations = max_conversations
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        self._purge()
        return len(self._items)

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, (until, _) in self._items.items() if until <= now]:
            del self._items[key]

    async def _set(self, key: str, data: bytes, ttl_s: float) -> None:
        self._purge()
        self._items[key] = (self._clock() + ttl_s, data)
        self._items.move_to_end(key)
        while len(self._items) > self.max_conversations:
            self._items.popitem(last=False)

    async def _get(self, key: str) -> bytes | None:
        self._purge()
        item = self._items.get(key)
        return None if item is None else item[1]

    async def _expire(self, key: str, ttl_s: float) -> None:
        item = self._items.get(key)
        if item is not None:
            self._items[key] = (min(item[0], self._clock() + ttl_s), item[1])


class RedisConversationStore(ConversationStore):
    """Redis (``server.redis_url``): any worker resumes what another saved. Keys are the
    token's SHA-256 under :data:`KEY_PREFIX`, values the history's JSON, with a TTL."""

    backend = "redis"

    def __init__(self, link: RedisLink, *, ttl_s: float = RESUME_TTL_S,
                 grace_s: float = RETIRED_GRACE_S) -> None:
        super().__init__(ttl_s=ttl_s, grace_s=grace_s)
        self.link = link  # the worker's one client: app.py closes it, not this store

    async def _call(self, awaitable: Awaitable[T]) -> T:
        from .redis_link import RedisUnavailable  # redis-py only when there is a Redis

        try:
            return await self.link.call(awaitable, REDIS_CALL_TIMEOUT_S)
        except RedisUnavailable:  # the link logged the outage, once for the worker
            raise ResumeError("unavailable") from None

    async def _set(self, key: str, data: bytes, ttl_s: float) -> None:
        await self._call(self.link.redis.set(KEY_PREFIX + key, data,
                                             px=max(1, int(ttl_s * 1000))))

    async def _get(self, key: str) -> bytes | None:
        from redis.client import NEVER_DECODE

        # The bytes as saved: the shared client decodes replies, and a value that is not
        # UTF-8 is a corrupt conversation, not an outage.
        raw = await self._call(self.link.redis.execute_command(
            "GET", KEY_PREFIX + key, **{NEVER_DECODE: True}))
        return raw if raw is None or isinstance(raw, bytes) else str(raw).encode("utf-8")

    async def _expire(self, key: str, ttl_s: float) -> None:
        await self._call(self.link.redis.pexpire(KEY_PREFIX + key, max(1, int(ttl_s * 1000))))


def conversation_store(app: FastAPI) -> ConversationStore:
    """The app's store, made on first use: Redis when ``server.redis_url`` is set (the worker's
    one Redis link), else memory."""
    store = getattr(app.state, "conversation_store", None)
    if store is None:
        link = get_registry(app).redis
        store = RedisConversationStore(link) if link is not None else MemoryConversationStore()
        app.state.conversation_store = store
    return store


async def close_conversation_store(app: FastAPI) -> None:
    """Finish the saves on their way (at shutdown; app.py closes the Redis link after)."""
    store = getattr(app.state, "conversation_store", None)
    if store is not None:
        app.state.conversation_store = None
        await store.aclose()
