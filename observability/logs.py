"""Logging for every Reckon process: human-readable lines, or one JSON object per line.

``RECKON_LOG_FORMAT=json`` (the image sets it; compose and Kubernetes too) renders every stdlib
log record as one JSON object per line with structlog: ``timestamp`` (UTC, ISO 8601), ``level``,
``logger``, ``event`` (the message), ``process`` (the role: coordinator, relay, payments, or the
sub-service), ``service`` for a sub-service, whatever is bound in the context where the record was
logged (``report_id``, ``request_id``, ...), ``trace_id`` when a trace context is current
(``observability.tracing``) and ``exception`` with the traceback. ``text`` (the default, for a
terminal and the tests that read process output) keeps the plain ``time level logger message``
lines.

The code keeps logging with the standard library (``logging.getLogger(...).info("... %s", x)``):
structlog only renders, so nothing else had to change; context is bound with ``bound(...)``,
which uses contextvars and so follows the asyncio task (and the tasks it starts).

**Secrets never reach a log line.** A process registers what must not be shown with
``hide_secrets(*secrets)`` (its broker and store URLs' secrets, ``transport.redact.url_secrets``)
as soon as it has read its settings; ``SecretFilter``, on the root logger's handlers (and on
``logging.lastResort``), replaces each of them, with its percent-encoded and decoded forms, by
``***`` in every record's message, arguments, exception text and stack, whoever logged it: Reckon,
aio-pika, aiormq, asyncio.

**Repeated warnings are rate-limited**: ``RateLimitedLog`` logs the first line of a key (a sender,
say) per interval and then one line saying how many more it suppressed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

import structlog

from observability import tracing

LOG_FORMAT_ENV = "RECKON_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LogFormat = Literal["text", "json"]
MASK = "***"
"""What a hidden secret is replaced by (as ``transport.redact`` masks a URL's password)."""


def log_format(value: str | None = None) -> LogFormat:
    """``RECKON_LOG_FORMAT`` (or ``value``): ``json`` or ``text`` (default). Anything else is an error."""
    chosen = (value if value is not None else os.environ.get(LOG_FORMAT_ENV, "")).strip().lower() or "text"
    if chosen not in ("text", "json"):
        raise ValueError(f"{LOG_FORMAT_ENV}={chosen!r}: expected json or text")
    return "json" if chosen == "json" else "text"


def configure_logging(
    level: int = logging.INFO,
    *,
    process: str | None = None,
    service: str | None = None,
    fmt: LogFormat | None = None,
    stream: Any = None,
) -> LogFormat:
    """Configure the root logger once (like ``logging.basicConfig``, a no-op when it already has
    handlers, e.g. under pytest); returns the format chosen. Its handler, and whatever handlers the
    root logger already has, hide the secrets registered with ``hide_secrets`` (before or after)."""
    chosen = fmt or log_format()
    handler = logging.StreamHandler(stream or sys.stderr)
    if chosen == "json":
        handler.setFormatter(json_formatter(process=process, service=service))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(SECRETS)
    logging.basicConfig(level=level, handlers=[handler])
    install_secret_filter()
    return chosen


def json_formatter(*, process: str | None = None, service: str | None = None) -> logging.Formatter:
    """A stdlib formatter rendering each record as one JSON line (structlog's ProcessorFormatter)."""
    static = {key: value for key, value in (("process", process), ("service", service)) if value}

    def add_static(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            add_trace_id,
            add_static,
            add_hidden_exception,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.processors.format_exc_info,
            hide_in_event,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def add_hidden_exception(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The traceback ``SecretFilter`` rewrote (it keeps only the text, with the secrets hidden)."""
    record = event.get("_record")
    if "exc_info" not in event and record is not None and record.exc_text:
        event.setdefault("exception", record.exc_text)
    return event


def hide_in_event(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every string value of a JSON line (its bound context too) with the secrets hidden of the
    ``SecretFilter`` the record went through, if any."""
    record = event.get("_record")
    secrets = getattr(record, SecretFilter.MARK, None)
    if isinstance(secrets, SecretFilter):
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = secrets.hide(value)
    return event


def add_trace_id(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current trace's id, unless one is bound explicitly."""
    context = tracing.current()
    if context is not None:
        event.setdefault("trace_id", context.trace_id)
    return event


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Bind ``fields`` (None values left out) to every record logged in this block, in this task
    and the tasks it starts; unbound when the block ends."""
    present = {key: _field(value) for key, value in fields.items() if value is not None}
    with structlog.contextvars.bound_contextvars(**present):
        yield


def fatal_as_json(message: str, *, logger: str, error: BaseException | None = None) -> bool:
    """With ``RECKON_LOG_FORMAT=json``: log why the process stops as one record with
    ``"fatal": true`` (and the traceback as a field, given ``error``), configuring JSON logging if
    the process had not yet; returns False otherwise, for the caller to print its own line. So a
    container's output stays one JSON object per line, fatal errors included."""
    try:
        if log_format() != "json":
            return False
    except ValueError:
        return False
    if not logging.getLogger().handlers:  # stopped before the process configured its logging
        configure_logging(logging.INFO, fmt="json")
    with bound(fatal=True):
        if error is None:
            logging.getLogger(logger).error("%s", message)
        else:
            logging.getLogger(logger).critical("%s", message, exc_info=error)
    return True


def bind(**fields: object) -> None:
    """Bind ``fields`` for the rest of this task (and tasks started from it): a process's identity."""
    structlog.contextvars.bind_contextvars(
        **{key: _field(value) for key, value in fields.items() if value is not None}
    )


def _field(value: object) -> object:
    """A bound value as JSON shows it: a flag stays true/false and a number a number (a count, a
    duration in seconds), anything else becomes text."""
    return value if isinstance(value, bool | int | float) else str(value)


# --- secrets ---------------------------------------------------------------------------------

_SUB_DELIMS = "!$&'()*+,;="
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def secret_forms(secret: str) -> set[str]:
    """``secret`` as a log line may quote it: as given, percent-decoded, percent-encoded (as
    ``urllib`` and as yarl, which keeps sub-delimiters, write it, escapes in either case), and
    escaped as ``repr`` writes it inside an exception's text."""
    forms: set[str] = set()
    for plain in {secret, unquote(secret)}:
        forms.add(plain)
        forms.add(repr(plain)[1:-1])
        for safe in ("", _SUB_DELIMS, _SUB_DELIMS + ":"):
            encoded = quote(plain, safe=safe)
            forms.add(encoded)
            forms.add(_PERCENT_ESCAPE.sub(lambda match: match[0].lower(), encoded))
    return {form for form in forms if form and form != MASK}


class SecretFilter(logging.Filter):
    """Replaces every registered secret (in each of its ``secret_forms``) by ``***`` in a record's
    message (its arguments merged in), its exception text and its stack. Never drops a record.

    On a handler it sees every record that handler writes, a library's (aio-pika, aiormq,
    asyncio) as much as Reckon's; ``configure_logging`` puts ``SECRETS`` on the root handler."""

    MARK = "_reckon_secret_filter"
    """The attribute naming, on a record it saw, the filter (for the JSON formatter's context)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every form hidden, longest first (so that a longer form is replaced before its parts)."""
        return self._secrets

    def add(self, *secrets: str) -> None:
        with self._lock:
            forms = set(self._secrets)
            for secret in secrets:
                if secret and secret != MASK:
                    forms |= secret_forms(secret)
            self._secrets = tuple(sorted(forms, key=lambda form: (-len(form), form)))

    def clear(self) -> None:
        """Forget every secret (for tests)."""
        with self._lock:
            self._secrets = ()

    def hide(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        setattr(record, self.MARK, self)
        if isinstance(record.msg, dict):  # a structlog-native event: its values
            record.msg = {
                key: self.hide(value) if isinstance(value, str) else value
                for key, value in record.msg.items()
            }
        else:
            try:
                message = record.getMessage()
            except Exception:  # a malformed format string: what logging would show, hidden
                message = f"{record.msg!s} {record.args!r}"
            hidden = self.hide(message)
            if hidden != message:
                record.msg, record.args = hidden, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            hidden = self.hide(record.exc_text)
            if hidden != record.exc_text:
                # Only the hidden text goes on: a formatter would render exc_info afresh.
                record.exc_text, record.exc_info = hidden, None
        if record.stack_info:
            record.stack_info = self.hide(record.stack_info)
        return True


SECRETS = SecretFilter()
"""This process's secrets: on the handler ``configure_logging`` installs, and on ``lastResort``."""


def hide_secrets(*secrets: str) -> None:
    """Hide each of ``secrets`` in every log line of this process from now on (a process passes
    ``transport.redact.url_secrets(url)`` of its broker and store URLs once it has read them).
    Empty strings (and ``***``) are ignored; calling it again adds to what is hidden."""
    SECRETS.add(*secrets)
    install_secret_filter()


def hidden(text: str) -> str:
    """``text`` with this process's secrets hidden: for a line printed rather than logged."""
    return SECRETS.hide(text)


def install_secret_filter() -> None:
    """Put ``SECRETS`` on every handler of the root logger and on ``logging.lastResort`` (what
    writes a warning when nothing configured logging), once each."""
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        if handler is not None and SECRETS not in handler.filters:
            handler.addFilter(SECRETS)


# --- rate-limited lines ----------------------------------------------------------------------


@dataclass
class _Window:
    started: float
    suppressed: int = 0
    level: int = logging.WARNING


class RateLimitedLog:
    """At most one line per key per ``interval_seconds``, then one line saying how many were
    suppressed: ``RateLimitedLog(log, 60).warning(sender, "reply from %s ignored: ...", sender, ...)``.

    The first line of a key is logged; the next ones within the interval are counted, not logged.
    The first line after the interval is preceded by ``"<key>: …N more suppressed in the last Ts"``
    (when N > 0) and starts a new interval. ``flush()`` writes the pending summaries at once (at
    shutdown, or from a periodic task). At most ``max_keys`` keys are remembered: the oldest is
    flushed and forgotten to make room (a sender that varies its key cannot grow memory).
    Counting every occurrence is the caller's (a Prometheus counter); ``suppressed_total`` is what
    this limiter did not log. Pure logic apart from the logger: the clock is injectable.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self._logger = logger
        self._interval = interval_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()
        self.suppressed_total = 0

    def warning(self, key: object, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: object, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def error(self, key: object, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)

    def log(self, level: int, key: object, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` had a line within the interval; True
        when it was logged."""
        name = str(key)
        summaries: list[tuple[str, _Window, float]] = []
        with self._lock:
            now = self._clock()
            window = self._windows.get(name)
            if window is not None and now - window.started < self._interval:
                window.suppressed += 1
                window.level = max(window.level, level)
                self.suppressed_total += 1
                return False
            if window is not None and window.suppressed:
                summaries.append((name, window, now))
            self._windows[name] = _Window(now, level=level)
            self._windows.move_to_end(name)
            while len(self._windows) > self._max_keys:
                oldest, evicted = self._windows.popitem(last=False)
                if evicted.suppressed:
                    summaries.append((oldest, evicted, now))
        for summary in summaries:
            self._summarise(*summary)
        self._logger.log(level, msg, *args)
        return True

    def flush(self) -> int:
        """Write every pending summary now (each key's interval starts again); how many lines."""
        with self._lock:
            now = self._clock()
            pending = [(name, window, now) for name, window in self._windows.items() if window.suppressed]
            for name, _window, _now in pending:
                self._windows[name] = _Window(now)
        for summary in pending:
            self._summarise(*summary)
        return len(pending)

    def _summarise(self, key: str, window: _Window, now: float) -> None:
        self._logger.log(
            window.level,
            "%s: …%d more suppressed in the last %.0fs",
            key,
            window.suppressed,
            now - window.started,
        )
