"""Connecting to RabbitMQ: a robust connection with TLS when the URL is ``amqps://``, named to the
broker, and one clear error when the broker does not answer."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection

from transport.redact import broker_unavailable, redact_url, scrub

CONNECT_ERRORS = (OSError, aio_pika.exceptions.AMQPConnectionError, asyncio.TimeoutError)


class BrokerUnavailable(RuntimeError):
    """RabbitMQ did not answer, or TLS to it could not be set up; the message says where and what
    to do, without the URL's password."""


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
        raise BrokerUnavailable(
            f"tls_ca_file {ca_file}: cannot load it as PEM CA certificates ({error})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            raise BrokerUnavailable(
                f"tls_cert_file {cert_file} / tls_key_file {key_file}: cannot load them as a PEM "
                f"certificate and its private key ({error})"
            ) from None
    return context


async def connect(
    target: str | BrokerSettings, connect_timeout: float = 10.0, name: str | None = None
) -> AbstractRobustConnection:
    """A robust connection to the broker at ``target`` (a URL, or the settings, which also give the
    TLS files for an ``amqps://`` URL). A broker that does not answer raises ``BrokerUnavailable``,
    whose message names the URL without its password."""
    if isinstance(target, str):
        url, context = target, tls_context(target)
    else:
        url = target.amqp_url
        context = tls_context(url, target.tls_ca_file, target.tls_cert_file, target.tls_key_file)
    try:
        return await aio_pika.connect_robust(
            url,
            timeout=connect_timeout,
            ssl_context=context,
            client_properties=None if name is None else {"connection_name": name},
        )
    except ssl.SSLError as error:
        raise BrokerUnavailable(
            f"TLS to AMQP_URL={redact_url(url)} failed ({scrub(str(error), url)}): check tls_ca_file "
            "against the broker's certificate and host name, and tls_cert_file / tls_key_file"
        ) from None
    except CONNECT_ERRORS as error:
        # ``from None``: the cause's text is in the message, scrubbed; a chained cause is not.
        raise BrokerUnavailable(broker_unavailable(url, error)) from None
    except ValueError as error:  # the URL itself (yarl)
        raise BrokerUnavailable(
            f"AMQP_URL={redact_url(url)} is not a valid amqp:// or amqps:// URL ({scrub(str(error), url)})"
        ) from None


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
