"""The kit's settings: the environment over the deployment's ``reckon.toml`` over defaults.

The kit plays the coordinator, so it reads what the coordinator would to ask a service and judge
its replies: the keys every role shares (``amqp_url``, ``namespace``, ``tls_*``,
``coordinator_user``; ``transport.settings.SHARED_KEYS``) and, of the coordinator's own,
``service_users`` (whose broker user each service answers as), ``dead_letters`` (how its request
queues are declared) and ``deadline_seconds`` (how long a service has to answer). Nothing else of
the file is read, so a coordinator's configuration is never refused here for a key the kit does
not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from transport.settings import SHARED_KEYS, BrokerClientSettings, SharedKeysSource

COORDINATOR_KEYS = frozenset({"service_users", "dead_letters", "deadline_seconds"})
"""The coordinator's own keys the kit reads from the file, beside ``SHARED_KEYS``."""


class ConformanceSettings(BrokerClientSettings):
    model_config = SettingsConfigDict(env_prefix="RECKON_", extra="ignore", hide_input_in_errors=True)

    # From BrokerClientSettings: amqp_url (AMQP_URL), namespace, tls_ca_file, tls_cert_file, tls_key_file.
    coordinator_user: str | None = Field(default=None, min_length=1, max_length=255)
    """The broker user the coordinator connects as: the kit must connect as it, for a service
    answers only its requests. None: not checked (one user for everything, in development)."""
    service_users: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """The broker user each service answers as (``RECKON_SERVICE_USERS=compute=reckon-compute,...``
    or the TOML table); a service not named answers as the coordinator's own user."""
    dead_letters: Literal["arguments", "policy"] = "arguments"
    """How a missing request queue is declared: with ``x-dead-letter-exchange`` or, as deployed, without
    it (a broker policy names the dead-letter exchange)."""
    deadline_seconds: float = Field(default=30.0, gt=0, le=3600)
    """How long a service has to answer (``--timeout``)."""

    @field_validator("service_users", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            service, equals, user = item.partition("=")
            if not equals or not service.strip() or not user.strip():
                raise ValueError(f"{item!r} is not SERVICE=USER")
            pairs[service.strip()] = user.strip()
        return pairs

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SharedKeysSource(settings_cls, SHARED_KEYS | COORDINATOR_KEYS))
