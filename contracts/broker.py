"""How to name the broker to a person: the URL without its password, and what to do when it is down."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` → ``amqp://user:***@host/``: credentials never reach a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    _, host_and_port = parts.netloc.rsplit("@", 1)
    netloc = f"{parts.username}:***@{host_and_port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def broker_unavailable(url: str, error: BaseException) -> str:
    """One line that says which broker did not answer and how to start one."""
    detail = str(error) or type(error).__name__
    return (
        f"RabbitMQ did not answer at AMQP_URL={redact_url(url)} ({detail}). "
        "Start it with `rabbitmq-server -detached` (or `docker compose up -d rabbitmq`), "
        "or point AMQP_URL at a running broker."
    )
