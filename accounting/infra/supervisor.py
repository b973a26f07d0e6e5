"""Supervised background work: a task that fails is logged with its context and restarted.

The relay, the take-over of abandoned reports and the period consumer each run under
``supervise``: an exception never ends them silently. Each keeps a ``TaskHealth`` that the log,
``reckon outbox`` and readiness read: whether it is running, how often it failed in a row, and
the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from observability import logs

log = logging.getLogger("reckon.supervisor")


@dataclass
class TaskHealth:
    name: str
    """An identifier (``relay``, ``resume``, ``period_consumer``): the ``task`` label of
    ``reckon_task_failures`` and the ``task`` field of the supervisor's log lines."""
    running: bool = False
    failures: int = 0
    """Failures since the task last ran without one."""
    restarts: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.running and self.failures == 0

    def ok(self) -> None:
        """The task completed a round of its work: it is healthy again."""
        self.failures = 0

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self.last_error_at = datetime.now(UTC)


async def supervise(
    health: TaskHealth,
    body: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    initial_backoff: float = 0.5,
    max_backoff: float = 30.0,
) -> None:
    """Run ``body`` until ``stop`` is set; restart it after any exception, with exponential backoff
    and jitter (tenacity). ``body`` returns only once ``stop`` is set."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        health.restarts += 1
        with logs.bound(task=health.name):
            log.error(
                "task %s failed (%d in a row): %s; restarting in %.1fs",
                health.name,
                health.failures,
                health.last_error,
                state.upcoming_sleep,
                exc_info=error,
            )

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=wait_exponential_jitter(multiplier=initial_backoff, max=max_backoff),
        stop=lambda _state: stop.is_set(),
        sleep=sleep,
        before_sleep=before_sleep,
    )
    try:
        async for attempt in retrying:
            with attempt:
                health.running = True
                try:
                    await body()
                except Exception as error:
                    health.failed(error)
                    raise
    except RetryError:
        pass  # stopped while failing: the last error is logged and kept in ``health``
    finally:
        health.running = False
