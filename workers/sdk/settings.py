"""Worker settings, from the environment (``AMQP_URL``, ``RECKON_NAMESPACE``, ``RECKON_CHUNK_SIZE``,
``RECKON_PUBLISH_WINDOW``, ...)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECKON_", extra="ignore")

    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        validation_alias=AliasChoices("AMQP_URL", "RECKON_AMQP_URL"),
    )
    namespace: str = ""
    chunk_size: int = Field(default=500, ge=1, le=10_000)
    prefetch: int = Field(default=4, ge=1, le=100)
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    publish_window: int = Field(default=16, ge=1, le=1000)
    """How many reply chunks of one answer may await their publisher confirm at once."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    """On SIGTERM: stop taking requests, then give the answers in flight this long to finish; what
    is still unacknowledged after it goes back to the queue for another replica."""
    coordinator_user: str | None = Field(default=None, min_length=1, max_length=255)
    """The broker user the coordinator connects as (``RECKON_COORDINATOR_USER``): only requests it
    sent (AMQP ``user_id``, verified by the broker) are answered. None: this service's own user
    (one user for everything, a development setup)."""
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    """For an ``amqps://`` AMQP_URL: the CA to verify the broker with (system CAs when unset) and a
    client certificate and key (mutual TLS)."""
