"""A broker connection that closes and comes back (a broker restart, a node failover) is routine
maintenance, not an error: an alert on error lines must not fire for it.

Each robust connection ``connect`` opens is watched: when the broker closes it, one warning names
the connection and the broker's reason; when it is back, one info line says after how long; only
if it has not come back within ``alert_after`` seconds is an error logged (with the last reason a
reconnection attempt failed for, such as ``ACCESS_REFUSED`` after a password change), and again
each time that long passes. What aiormq and aio-pika log meanwhile — the close at ERROR with a
traceback, each channel's failed restore, each failed attempt — is dropped by ``LibraryNoise``:
the watcher's lines say it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Any

from aio_pika.abc import AbstractRobustConnection

log = logging.getLogger("reckon.broker")

DEFAULT_ALERT_SECONDS = 60.0
NOISY_LOGGERS = ("aiormq.connection", "aio_pika.tools", "aio_pika.robust_connection")

_watchers: weakref.WeakValueDictionary[int, ConnectionWatcher] = weakref.WeakValueDictionary()


class ConnectionWatcher:
    def __init__(self, connection: AbstractRobustConnection, name: str, alert_after: float) -> None:
        self.name = name
        self.alert_after = alert_after
        self.lost_at: float | None = None
        self.reason = ""
        self._alert: asyncio.Task[None] | None = None
        self._connection = weakref.ref(connection)

    def closed(self, _sender: Any, error: BaseException | None) -> None:
        connection = self._connection()
        if connection is None or error is None or getattr(connection, "_close_called", False):
            return  # closed by this process: nothing to report
        if self.lost_at is not None:
            self.reason = describe(error)  # a restore that failed while already lost
            return
        self.lost_at = time.monotonic()
        self.reason = describe(error)
        log.warning("broker connection %s closed (%s); reconnecting", self.name, self.reason)
        self._alert = asyncio.get_running_loop().create_task(self._alert_while_lost())

    def attempt_failed(self, reason: str) -> None:
        if self.lost_at is not None:
            self.reason = reason

    def reconnected(self, _sender: Any) -> None:
        if self.lost_at is None:
            return
        after = time.monotonic() - self.lost_at
        self.lost_at = None
        if self._alert is not None:
            self._alert.cancel()
            self._alert = None
        log.info("broker connection %s is back after %.1f s", self.name, after)

    async def _alert_while_lost(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while self.lost_at is not None:
                await asyncio.sleep(self.alert_after)
                if self.lost_at is None:
                    return
                log.error(
                    "broker connection %s has not come back for %.0f s; the last attempt failed: %s",
                    self.name,
                    time.monotonic() - self.lost_at,
                    self.reason,
                )


def watch(
    connection: AbstractRobustConnection, name: str, alert_after: float = DEFAULT_ALERT_SECONDS
) -> None:
    """Log this connection's losses and returns as described above; quiet the libraries' own.
    Only a robust connection comes back: anything else is left as it is."""
    if not hasattr(connection, "reconnect_callbacks"):
        return
    watcher = ConnectionWatcher(connection, name, alert_after)
    _watchers[id(connection)] = watcher
    setattr(connection, "_reckon_watcher", watcher)  # noqa: B010 - keeps it alive with the connection
    connection.close_callbacks.add(watcher.closed)
    connection.reconnect_callbacks.add(watcher.reconnected)
    for logger in NOISY_LOGGERS:
        target = logging.getLogger(logger)
        if not any(isinstance(existing, LibraryNoise) for existing in target.filters):
            target.addFilter(LibraryNoise())


def describe(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


class LibraryNoise(logging.Filter):
    """Drops what aiormq and aio-pika log about a watched connection being lost and restored."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == "aiormq.connection":
            # "Unexpected connection close from remote ..." (ERROR) and the reader's traceback.
            return not (
                message.startswith("Unexpected connection close") or "reader exited abnormally" in message
            )
        if record.name == "aio_pika.tools":
            # A channel's restore tried while its connection is down; the connection retries it.
            return "_on_close" not in message
        if record.name == "aio_pika.robust_connection":
            watcher = _watcher_of(record)
            if watcher is None or watcher.lost_at is None:
                return True
            if message.startswith(("Connection attempt to", "Reconnect attempt failed")):
                watcher.attempt_failed(message.split(" failed", 1)[-1].strip(" :."))
                return False
            return not message.startswith("Connection to ")  # "... closed. Reconnecting after ..."
        return True


def _watcher_of(record: logging.LogRecord) -> ConnectionWatcher | None:
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        watcher = _watchers.get(id(arg))
        if watcher is not None:
            return watcher
    return None
