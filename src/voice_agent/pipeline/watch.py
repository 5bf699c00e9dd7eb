"""A voice pipeline's watchers: a turn that makes no progress (stalled, logged with its tasks)
and a user gone quiet after the agent's reply (the idle prompt, then the goodbye).

A mixin of :class:`~voice_agent.pipeline.agent.VoicePipeline`, which owns the state read here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..core.tasks import TaskSet, stuck_tasks, task_stack
from .turn_events import UserIdle

if TYPE_CHECKING:
    from ..core.config import V3Config
    from .replies import Replies
    from .turn_events import TurnInput
    from .turn import TurnCoordinator

log = logging.getLogger("voice_agent.pipeline.agent")

WATCHDOG_S = 15.0
"""A turn with no event for this long is logged with the session's tasks (it may be stuck)."""
IDLE_POLL_S = 0.25


class PipelineWatch:
    session_id: str
    config: V3Config
    coordinator: TurnCoordinator
    _replies: Replies
    _tasks: TaskSet
    _closed: bool
    _progress_at: float
    _quiet_since: float
    _idle_stage: int

    if TYPE_CHECKING:  # the pipeline's own
        def _waiting_for_user(self) -> bool: ...

        async def _dispatch(self, event: TurnInput | None) -> None: ...

    @property
    def stalled_s(self) -> float:
        """How long the current turn has made no progress (no event, no transcript, no reply
        audio going out); 0 while the pipeline waits for the user."""
        if self.coordinator.idle or self._waiting_for_user():
            return 0.0
        return time.monotonic() - max(self._progress_at, self._replies.progress_at)

    @property
    def in_turn(self) -> bool:
        """A turn is under way and moving (the user speaks, the agent thinks or speaks): the
        session is in use however long ago the client last sent a message. A stalled turn is
        not: it must not keep an idle session's slot."""
        return self.stalled_s > 0 and not self.stalled

    @property
    def stalled(self) -> bool:
        """No progress for longer than WATCHDOG_S: /v3/health counts such sessions."""
        return self.stalled_s > WATCHDOG_S

    async def _watch_idle(self) -> None:
        """After the agent's reply, silence for ``idle_prompt_s``: "Are you still there?";
        silence for ``idle_goodbye_s`` more: the goodbye, and the session ends."""
        cfg = self.config.pipeline
        answered = False
        while not self._closed:
            await asyncio.sleep(IDLE_POLL_S)
            answered = answered or self.coordinator.conversation.history != []
            if not answered or not self.coordinator.idle or self._idle_stage >= 2:
                continue
            quiet_s = time.monotonic() - self._quiet_since
            if self._idle_stage == 0 and quiet_s >= cfg.idle_prompt_s:
                self._idle_stage = 1
                await self._dispatch(UserIdle(cfg.idle_prompt))
            elif self._idle_stage == 1 and cfg.idle_goodbye_s > 0 \
                    and quiet_s >= cfg.idle_goodbye_s:
                self._idle_stage = 2
                await self._dispatch(UserIdle(cfg.idle_goodbye, goodbye=True))

    async def _watch(self) -> None:
        """Log a turn that makes no progress, with the tasks that may hold it (once a period)."""
        logged = 0.0
        while True:
            await asyncio.sleep(WATCHDOG_S / 3)
            stalled = self.stalled_s
            if stalled > WATCHDOG_S and time.monotonic() - logged > WATCHDOG_S:
                logged = time.monotonic()
                stacks = "\n".join(f"--- {t.get_name()}\n{task_stack(t)}"
                                   for t in {*self._tasks, *stuck_tasks()} if not t.done())
                log.warning("[%s] turn in state %s made no progress for %.0f s; tasks:\n%s",
                            self.session_id, self.coordinator.state.value, stalled, stacks)
