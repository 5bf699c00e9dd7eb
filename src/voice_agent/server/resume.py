"""One session's side of resuming a conversation: its own token, its saves after each turn, and
the one ``resume`` it may do (the store, the token's rules and the saved form: resume_store.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.conversation import ConversationManager
from ..transport import protocol
from ..transport.protocol import ErrorCode, ResumeMessage
from .controller import SessionController
from .resume_store import (REDIS_CALL_TIMEOUT_S, ConversationStore, ResumeError, client_view,
                           close_conversation_store, conversation_store, new_token)
from .sessions import Sender

__all__ = ["ResumingController", "SessionResume", "close_conversation_store",
           "conversation_store"]

log = logging.getLogger(__name__)


# -- one session ---------------------------------------------------------------------------------

class SessionResume:
    """A session's side: its own token, its saves, and the one resume it may do."""

    def __init__(self, store: ConversationStore, conversation: ConversationManager,
                 session_id: str = "") -> None:
        self.store = store
        self.conversation = conversation
        self.session_id = session_id
        self.token = new_token()
        self._saved = conversation.messages_processed
        self._resumed = False

    def changed(self) -> None:
        """Called after every pipeline event and at the close: a finished turn (the history
        grew) is saved, in the background."""
        processed = self.conversation.messages_processed
        if processed == self._saved:
            return
        self._saved = processed
        self.store.save_soon(self.token, self.conversation.export())

    async def finish(self) -> None:
        """The session is closed: save what its close added (a reply it cut) and wait for the
        saves on their way, bounded, so that none is left behind at a shutdown."""
        self.changed()
        try:
            async with asyncio.timeout(2 * REDIS_CALL_TIMEOUT_S):
                await self.store.flush(self.token)
        except TimeoutError:
            log.warning("session %s: the last save of its conversation is still on its way",
                        self.session_id)

    def _check_fresh(self) -> None:
        if self._resumed or self.conversation.messages_processed or len(self.conversation):
            raise ResumeError("started")

    async def resume(self, token: str) -> list[dict[str, Any]]:
        """Carry the conversation saved under ``token`` on in this session; the history as
        the client is shown it. :class:`ResumeError` when it cannot be."""
        self._check_fresh()
        history = await self.store.load(token)
        self._check_fresh()  # a turn may have ended while the store answered
        self.conversation.restore(history)
        self._resumed = True
        log.info("session %s: resumed a conversation of %d messages (%d kept in context)",
                 self.session_id, len(history), len(self.conversation))
        # Through the session's own queue of saves, so that a turn ending meanwhile is
        # written after this, never before.
        self.store.save_soon(self.token, self.conversation.export())
        await self.store.flush(self.token)
        try:
            await self.store.retire(token)
        except ResumeError:
            pass  # the store is down: the old token expires on its own
        return client_view(history)


class ResumingController(SessionController):
    """The session's message controller, with ``resume`` (the rest as SessionController)."""

    def __init__(self, *args: Any, resume: SessionResume, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume = resume

    async def _dispatch(self, message: Any, *, via: str, reply: Sender) -> None:
        if not isinstance(message, ResumeMessage):
            await super()._dispatch(message, via=via, reply=reply)
            return
        try:
            history = await self.resume.resume(message.token)
        except ResumeError as exc:
            self.session.send_error(ErrorCode.RESUME_FAILED,
                                    f"{exc.message}: this is a new conversation", reply=reply)
            return
        except Exception:  # a bug here must not cost the session
            log.exception("session %s: resuming failed", self.session.id)
            self.session.send_error(ErrorCode.RESUME_FAILED,
                                    "the conversation could not be resumed: this is a new "
                                    "conversation", reply=reply)
            return
        if self.session.transcript is not None:
            self.session.transcript.resumed(history)
        self.session.reply(reply, protocol.resumed(self.resume.token, history))
