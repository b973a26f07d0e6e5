"""Connecting to RabbitMQ: a robust connection with TLS when the URL is ``amqps://``, named to the
broker, and one clear error when the broker does not answer.

``connect`` checks the URL first (``transport.urls``) and bounds the first attempt: aio-pika retries,
and logs, a URL it cannot use for ever. Given a ``stop`` event (set by SIGTERM), it gives up as
soon as the event is set, closing what it had begun, and raises ``Stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractRobustConnection

from transport.blips import DEFAULT_ALERT_SECONDS, watch
from transport.redact import broker_refused_vhost, broker_unavailable, redact_url, scrub
from transport.urls import amqp_url_problem

CONNECT_ERRORS = (OSError, aio_pika.exceptions.AMQPConnectionError, asyncio.TimeoutError)
FIRST_ATTEMPT_GRACE_SECONDS = 1.0
"""How much longer than ``connect_timeout`` the first connection may take in all (TLS, login,
aio-pika's own retries of an error it does not count as a connection error) before it is given up."""
T = TypeVar("T")
LIBRARY_LOGGERS = ("aiormq.connection", "aio_pika.connection", "aio_pika.robust_connection")
"""Where aio-pika and aiormq log a connection attempt that failed."""


class _FirstAttempt:
    """Whether the first attempt of one ``connect`` is still under way (shared by the tasks aio-pika
    starts for it, which inherit the context it was set in)."""

    pending = True


_first_attempt: contextvars.ContextVar[_FirstAttempt | None] = contextvars.ContextVar(
    "reckon_first_connect_attempt", default=None
)


class _QuietFirstAttempt(logging.Filter):
    """Drops what aio-pika and aiormq log about a first attempt still under way: ``connect`` says
    in one line (``BrokerUnavailable``) how it ended. Reconnections later are logged as usual."""

    def filter(self, record: logging.LogRecord) -> bool:
        attempt = _first_attempt.get()
        return attempt is None or not attempt.pending


_QUIET = _QuietFirstAttempt()


def _quiet_first_attempts() -> None:
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


class BrokerUnavailable(RuntimeError):
    """RabbitMQ did not answer, or TLS to it could not be set up; the message says where and what
    to do, without the URL's password. ``reason`` is the short form, for ``/readyz``."""

    def __init__(self, message: str, reason: str = "not answering") -> None:
        super().__init__(message)
        self.reason = reason


class BrokerMisconfigured(BrokerUnavailable):
    """The broker settings can never work as they are (a malformed URL, TLS files that cannot be
    loaded): waiting would not help."""


class Stopped(Exception):
    """``stop`` was set (SIGTERM, say) before the work it guarded was done; that work was cancelled."""


class BrokerSettings(Protocol):
    """What ``connect`` needs of a party's settings: the URL and the TLS files."""

    @property
    def amqp_url(self) -> str: ...
    @property
    def tls_ca_file(self) -> Path | None: ...
    @property
    def tls_cert_file(self) -> Path | None: ...
    @property
    def tls_key_file(self) -> Path | None: ...


def tls_context(
    url: str, ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext | None:
    """None for ``amqp://``; for ``amqps://`` a context that verifies the broker's certificate and
    host name against ``ca_file`` (the system's CAs when None), TLS 1.2 at least, presenting
    ``cert_file``/``key_file`` when given (mutual TLS). A file that cannot be loaded raises
    ``BrokerUnavailable`` naming the setting."""
    if not url.lower().startswith("amqps://"):
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise BrokerMisconfigured(
            f"tls_ca_file {ca_file}: cannot load it as PEM CA certificates ({error})", "tls_ca_file"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            raise BrokerMisconfigured(
                f"tls_cert_file {cert_file} / tls_key_file {key_file}: cannot load them as a PEM "
                f"certificate and its private key ({error})",
                "tls_cert_file",
            ) from None
    return context


async def connect(
    target: str | BrokerSettings,
    connect_timeout: float = 10.0,
    name: str | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> AbstractRobustConnection:
    """A robust connection to the broker at ``target`` (a URL, or the settings, which also give the
    TLS files for an ``amqps://`` URL). A malformed URL, or a broker that does not answer within
    ``connect_timeout``, raises ``BrokerUnavailable``, whose message names the URL without its
    password. With ``stop``: raises ``Stopped`` as soon as it is set, having closed the connection
    it had begun (whose retries would otherwise go on)."""
    if isinstance(target, str):
        url, context = target, tls_context(target)
    else:
        url = target.amqp_url
        context = tls_context(url, target.tls_ca_file, target.tls_cert_file, target.tls_key_file)
    problem = amqp_url_problem(url)
    if problem is not None:
        raise BrokerMisconfigured(f"AMQP_URL {problem}", "malformed AMQP_URL")
    attempt = _connect(url, context, connect_timeout, name)
    connection = await (attempt if stop is None else unless_stopped(attempt, stop))
    alert_after = getattr(target, "reconnect_alert_seconds", DEFAULT_ALERT_SECONDS)
    watch(connection, name or redact_url(url), alert_after)
    return connection


async def _connect(
    url: str, context: ssl.SSLContext | None, connect_timeout: float, name: str | None
) -> AbstractRobustConnection:
    begun: list[AbstractRobustConnection] = []
    _quiet_first_attempts()
    attempt = _FirstAttempt()
    token = _first_attempt.set(attempt)

    class RobustConnection(aio_pika.RobustConnection):  # the name aio-pika's repr shows in logs
        """Remembered as soon as it exists, so that a failed or cancelled first attempt can close
        it (aio-pika's reconnection task would otherwise retry, and log, until the process ends)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            begun.append(self)

    try:
        async with asyncio.timeout(connect_timeout + FIRST_ATTEMPT_GRACE_SECONDS):
            return await aio_pika.connect_robust(
                url,
                timeout=connect_timeout,
                ssl_context=context,
                client_properties=None if name is None else {"connection_name": name},
                connection_class=RobustConnection,
            )
    except BaseException as error:
        for connection in begun:
            with contextlib.suppress(Exception):
                await connection.close()
        if isinstance(error, ssl.SSLError):
            raise BrokerUnavailable(
                f"TLS to AMQP_URL={redact_url(url)} failed ({scrub(str(error), url)}): check tls_ca_file "
                "against the broker's certificate and host name, and tls_cert_file / tls_key_file",
                "TLS handshake failed",
            ) from None
        if isinstance(error, TimeoutError):
            raise BrokerUnavailable(
                broker_unavailable(url, TimeoutError(f"no connection within {connect_timeout:g}s")),
                "no answer within the connect timeout",
            ) from None
        if isinstance(error, aiormq.exceptions.ProtocolSyntaxError):
            # The broker closed the connection while it was being opened: the vhost.
            raise BrokerUnavailable(broker_refused_vhost(url), "vhost refused to this user") from None
        if isinstance(error, CONNECT_ERRORS):
            # ``from None``: the cause's text is in the message, scrubbed; a chained cause is not.
            raise BrokerUnavailable(broker_unavailable(url, error), refusal_kind(error)) from None
        if isinstance(error, ValueError):  # the URL itself (yarl)
            detail = scrub(str(error), url)
            raise BrokerMisconfigured(
                f"AMQP_URL={redact_url(url)} is not a valid amqp:// or amqps:// URL ({detail})",
                "malformed AMQP_URL",
            ) from None
        raise
    finally:
        attempt.pending = False
        _first_attempt.reset(token)


def refusal_kind(error: BaseException) -> str:
    """The short reason of a failed connection attempt (for ``/readyz``)."""
    if "ACCESS_REFUSED" in str(error) or type(error).__name__ == "ProbableAuthenticationError":
        return "login refused (ACCESS_REFUSED)"
    refused = isinstance(error, ConnectionRefusedError) or isinstance(error.__cause__, ConnectionRefusedError)
    if refused or getattr(error, "errno", None) == errno.ECONNREFUSED or "Connect call failed" in str(error):
        return "connection refused (nothing listens there)"
    return "not answering"


def broker_may_come_back(error: BaseException) -> bool:
    """Whether waiting can help: the broker not answering, refusing this user or one of its
    permissions (which an operator may be setting right now), a connection lost mid-start. Not a
    setting that can never work (``BrokerMisconfigured``)."""
    if isinstance(error, BrokerMisconfigured):
        return False
    return isinstance(error, BrokerUnavailable | aiormq.exceptions.AMQPError | ConnectionError | TimeoutError)


def broker_problem(error: BaseException) -> str:
    """What ``/readyz`` says while a start-up waits for the broker: short, no URL."""
    if isinstance(error, BrokerUnavailable):
        return error.reason
    if isinstance(error, aiormq.exceptions.ChannelAccessRefused):
        return "a permission is missing (ACCESS_REFUSED on a channel)"
    if isinstance(error, aiormq.exceptions.ChannelNotFoundEntity):
        return "a queue or exchange it needs does not exist yet"
    return f"connection lost while starting ({type(error).__name__})"


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T:
    """``work``'s result, unless ``stop`` is set first: then ``work`` is cancelled (and awaited,
    so that its clean-up runs) and ``Stopped`` is raised. A stop already set stops at once."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)
    if task.cancelled() and stop.is_set():
        raise Stopped
    return task.result()


def broker_user(connection: AbstractConnection) -> str:
    """The user name a connection logged in as: what the broker checks ``user_id`` against."""
    url = getattr(connection, "url", None)
    return str(getattr(url, "user", None) or "guest")


def connected_check(connection: AbstractConnection) -> Callable[[], Awaitable[str | None]]:
    """A readiness check (``observability.http.Check``): None while connected, else why not."""

    async def broker() -> str | None:
        connected = getattr(connection, "connected", None)
        if connection.is_closed or (connected is not None and not connected.is_set()):
            return "not connected (reconnecting)"
        return None

    return broker
