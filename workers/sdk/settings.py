"""Worker settings: the environment (``AMQP_URL``, ``RECKON_NAMESPACE``, ``RECKON_CHUNK_SIZE``,
``RECKON_PUBLISH_WINDOW``, ...; unknown variables are ignored) over the keys every role shares in
the deployment's ``reckon.toml`` (``$RECKON_CONFIG``: ``namespace``, ``coordinator_user``,
``amqp_url``, ``tls_*``), so a namespace set in that file alone moves every role's queues.

The broker keys (``amqp_url``, ``namespace``, ``tls_*``) and their checks are every party's
(``transport.settings.BrokerClientSettings``): a malformed ``AMQP_URL`` is refused at start with one
line that never shows its password (``run_worker`` prints it and exits 2).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from transport.settings import BrokerClientSettings, SharedKeysSource


class WorkerSettings(BrokerClientSettings):
    model_config = SettingsConfigDict(env_prefix="RECKON_", extra="ignore", hide_input_in_errors=True)

    # From BrokerClientSettings: amqp_url (``AMQP_URL`` or ``RECKON_AMQP_URL``; default
    # amqp://guest:guest@127.0.0.1:5672/; checked by ``transport.urls.amqp_url_problem``: ``amqp://``
    # or ``amqps://`` with a host, a password with ``@ : / ? # %`` in it percent-encoded),
    # namespace, and tls_ca_file, tls_cert_file, tls_key_file (for an ``amqps://`` AMQP_URL: the CA
    # to verify the broker with, the system's CAs when unset, and a client certificate and key for
    # mutual TLS).
    chunk_size: int = Field(default=500, ge=1, le=10_000)
    prefetch: int = Field(default=4, ge=1, le=100)
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    publish_window: int = Field(default=16, ge=1, le=1000)
    """How many reply chunks of one answer may await their publisher confirm at once."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    """On SIGTERM: stop taking requests, then give the answers in flight this long to finish; what
    is still unacknowledged after it goes back to the queue for another replica."""
    allow_empty_store: bool = False
    """``RECKON_ALLOW_EMPTY_STORE``: answer from a store that holds no usage at all. Off, such a
    worker is not ready and answers with an error naming its store (``workers.sdk.empty``)."""
    coordinator_user: str | None = Field(default=None, min_length=1, max_length=255)
    """The broker user the coordinator connects as (``RECKON_COORDINATOR_USER``): only requests it
    sent (AMQP ``user_id``, verified by the broker) are answered. None: this service's own user
    (one user for everything, a development setup)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The constructor's arguments, the environment, then only the shared keys of the file:
        the coordinator's own keys (``shutdown_grace_seconds``, say) are never a worker's."""
        return (init_settings, env_settings, SharedKeysSource(settings_cls))
