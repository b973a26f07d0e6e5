"""Start-up that waits for what a long-running process needs instead of exiting.

A pod whose broker or database is not there yet (a cluster coming up, a broker restarting, a user
whose permissions are being set) would otherwise exit and land in CrashLoopBackOff, its restarts
growing further apart each time. ``Startup.wait_for`` retries one start-up step with exponential
backoff and jitter (tenacity) for as long as its error is *transient*, while ``/healthz`` says the
process is alive and ``/readyz`` answers 503 naming what it waits for. What can never work (a
malformed URL, an invalid rate card) is not transient: it goes on to the caller, which exits with
one line.

The log says it once, not at every attempt: a warning when the step first fails (and when its
reason changes), an error once it has failed for ``alert_after`` seconds (and each time that long
again), an info line when it succeeds after waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from observability.http import OpsServer

log = logging.getLogger("reckon.startup")

T = TypeVar("T")

Describe = Callable[[BaseException], str]
"""A short reason for ``/readyz`` (never an exception's whole text, which may carry a URL)."""


def kind_of(error: BaseException) -> str:
    return type(error).__name__


@dataclass
class Startup:
    """Retries start-up steps (see the module's doc); ``ops`` is the process's operations server,
    if it has one, whose readiness and start-up checks say what the process is waiting for."""

    ops: OpsServer | None = None
    alert_after: float = 60.0
    first_wait: float = 0.5
    longest_wait: float = 30.0
    waited: dict[str, float] = field(default_factory=dict)
    """Per step that had to wait: the seconds it waited before it succeeded."""

    async def wait_for(
        self,
        what: str,
        step: Callable[[], Awaitable[T]],
        transient: Callable[[BaseException], bool],
        describe: Describe = kind_of,
        *,
        holds_startup: bool = False,
    ) -> T:
        """``step()``'s result, retried while it raises an error ``transient`` accepts; any other
        error is raised at once. ``what`` names the dependency ("the broker"). ``holds_startup``:
        the step must not be interrupted by a restart once it answers (a migration), so
        ``/startupz`` answers 503 while an attempt runs."""
        began = time.monotonic()
        watch = _Watch(what, self.alert_after, began)
        last: list[str] = []

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if error is None:
                return
            last[:] = [describe(error)]
            self._say(f"waiting for {what}: {last[0]}")
            pause = state.next_action.sleep if state.next_action is not None else 0.0
            watch.failed(error, pause)

        retrying = AsyncRetrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential_jitter(
                multiplier=self.first_wait, max=self.longest_wait, jitter=self.first_wait
            ),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if last:
                    self._say(f"waiting for {what}: trying again (last attempt: {last[0]})")
                if self.ops is not None and holds_startup:
                    self.ops.hold_startup(f"{what}: in progress")
                try:
                    result = await step()
                finally:
                    if self.ops is not None and holds_startup:
                        self.ops.release_startup()
        if watch.failures:
            self.waited[what] = time.monotonic() - began
            log.info("%s answers after %.1f s; starting", what, self.waited[what])
        return result

    def _say(self, reason: str) -> None:
        if self.ops is not None:
            self.ops.set_checks({"startup": _waiting(reason)})


class _Watch:
    """What has been logged about one step's failures, so that each thing is said once."""

    def __init__(self, what: str, alert_after: float, began: float) -> None:
        self.what = what
        self.alert_after = alert_after
        self.began = began
        self.failures = 0
        self.reason = ""
        self.alerts = 0

    def failed(self, error: BaseException, pause: float) -> None:
        self.failures += 1
        reason = " ".join(str(error).split()) or type(error).__name__
        waited = time.monotonic() - self.began
        if reason != self.reason:
            self.reason = reason
            log.warning(
                "waiting for %s: %s; retrying with backoff (next in %.1f s), not ready until it answers",
                self.what,
                reason,
                pause,
            )
        if waited >= self.alert_after * (self.alerts + 1):
            self.alerts += 1
            log.error("%s has not answered for %.0f s: %s", self.what, waited, reason)


def _waiting(reason: str) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        return reason

    return check
