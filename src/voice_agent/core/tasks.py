"""Bounded cancellation: a task asked to stop either stops within a deadline or is logged with
its stack and abandoned, so nothing waits on it forever.

Why: on Python 3.11 ``asyncio.wait_for`` can swallow a cancellation (when the awaited future is
done in the same loop turn as the cancel), and a task that lost its cancel waits forever; every
caller that awaited it went deaf with it (issue #12). ``asyncio.wait`` with a timeout neither
cancels nor waits past its deadline, whatever the task does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 1.0
"""How long a cancelled stage may take to stop before it is abandoned."""


async def within(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """``await awaitable`` for at most ``timeout_s`` (TimeoutError after): ``asyncio.wait_for``
    without its Python 3.11 race, where a cancel arriving as the awaitable finishes is lost."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


def task_stack(task: asyncio.Task[Any], depth: int = 0) -> str:
    """Where ``task`` waits, down its whole chain of awaits: each coroutine's frame, then the
    task or tasks it waits on, and theirs. ``Task.print_stack`` shows only the top frame of a
    suspended task, which is the same for every stuck reply."""
    out: list[str] = []
    indent = "  " * (depth + 1)
    obj: Any = task.get_coro()
    seen: set[int] = set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        frame = next((f for a in ("cr_frame", "gi_frame", "ag_frame")
                      if (f := getattr(obj, a, None)) is not None), None)
        if frame is not None:
            out.append(f'{indent}File "{frame.f_code.co_filename}", line {frame.f_lineno}, '
                       f"in {frame.f_code.co_name}")
        obj = next((n for a in ("cr_await", "gi_yieldfrom", "ag_await")
                    if (n := getattr(obj, a, None)) is not None), None)
    waiter = getattr(task, "_fut_waiter", None)  # what the task's innermost await waits on
    if depth < 6 and waiter is not None:
        inner = [waiter] if isinstance(waiter, asyncio.Task) else [
            c for c in getattr(waiter, "_children", ()) if isinstance(c, asyncio.Task)]
        for child in inner:
            out.append(f"{indent}awaiting task {child.get_name()}:")
            out.append(task_stack(child, depth + 1))
        if not inner:
            out.append(f"{indent}awaiting {type(waiter).__name__}")
    return "\n".join(out)


def stuck_tasks() -> list[asyncio.Task[Any]]:
    """Tasks that were asked to cancel and are still running: where a lost cancel hides."""
    return [t for t in asyncio.all_tasks() if not t.done() and t.cancelling() > 0]


async def stop_within(task: asyncio.Task[Any], what: str, *,
                      deadline_s: float = STOP_DEADLINE_S) -> bool:
    """Cancel ``task`` and wait at most ``deadline_s`` for it. True when it stopped; otherwise
    log its stack and those of every task still cancelling, and give up on it."""
    if task.done():
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=deadline_s)
    if done:
        return True
    dump = "\n".join(f"--- {t.get_name()}\n{task_stack(t)}" for t in stuck_tasks())
    log.error("%s did not stop within %.1f s; abandoned. Task stack:\n%s\nTasks still "
              "cancelling:\n%s", what, deadline_s, task_stack(task), dump)
    return False


class TaskSet:
    """The background tasks one object owns: named after it, their failures logged (a task's
    exception would otherwise vanish with it), and stopped together, each within its deadline."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str = "") -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: task %s failed: %r", self.owner, task.get_name(), exc, exc_info=exc)

    async def stop(self, *, skip: Iterable[asyncio.Task[Any]] = ()) -> None:
        """Stop every task but the caller and those in ``skip`` (each within its deadline)."""
        left = set(skip) | {asyncio.current_task()}
        await asyncio.gather(*(stop_within(t, f"{self.owner}: task {t.get_name()}")
                               for t in self if t not in left))
