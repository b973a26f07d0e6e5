"""Coordinator configuration: environment (``RECKON_*``, ``AMQP_URL``) over a TOML file over defaults."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from accounting.core.rate_card import RateCard
from contracts.broker import DEFAULT_AMQP_URL

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class Settings(BaseSettings):
    """Everything the coordinator needs; the services list is static, never discovered."""

    model_config = SettingsConfigDict(env_prefix="RECKON_", extra="forbid")

    amqp_url: str = Field(
        default=DEFAULT_AMQP_URL, validation_alias=AliasChoices("AMQP_URL", "RECKON_AMQP_URL", "amqp_url")
    )
    namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_-]*$")
    services: Annotated[tuple[str, ...], NoDecode] = ()
    """Required by the coordinator (see ``require_services``); the scheduler and payments need none."""
    deadline_seconds: float = Field(default=30.0, gt=0, le=3600)
    rate_card: Path = Path("config/rate-card.toml")
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    store_url: str = "sqlite+aiosqlite:///var/reckon.sqlite3"
    """SQLAlchemy async URL: SQLite by default, ``postgresql+asyncpg://user@host/db`` in production."""
    relay: bool = True
    """Relay the outbox from this process; false when a separate ``reckon relay`` does it."""
    relay_poll_seconds: float = Field(default=1.0, gt=0)
    relay_claim_seconds: float = Field(default=30.0, gt=0)
    """How long a relay holds unsent rows before another relay may take them over."""
    relay_window: int = Field(default=500, ge=1, le=10_000)
    """Outbox rows a relay claims and keeps in flight at once (their confirms awaited together)."""
    lease_seconds: float = Field(default=60.0, ge=3, le=3600)
    """How long a report stays with its builder without a renewal (renewed every third of it)."""
    reply_prefetch: int = Field(default=64, ge=1, le=10_000)
    """Reply chunks delivered to the coordinator and not yet stored, at most."""
    store_busy_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """SQLite only: how long a write waits for another writer before failing (and being retried)."""
    resume_every_seconds: float = Field(default=15.0, gt=0)
    """How often to look for reports abandoned by a coordinator that stopped or died."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM, how long a report in flight may take to finish before it is left to a restart."""

    @field_validator("services", mode="before")
    @classmethod
    def _split_services(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("services")
    @classmethod
    def _valid_services(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _SERVICE_NAME.match(name):
                raise ValueError(f"service name {name!r} must be lowercase letters, digits and dashes")
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"service(s) listed twice: {', '.join(duplicates)}")
        return value

    def require_services(self) -> tuple[str, ...]:
        if not self.services:
            raise ValueError(
                "no services configured: list them in the config file (services = [...]) "
                "or in RECKON_SERVICES=compute,storage"
            )
        return self.services

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (or ``$RECKON_CONFIG``), the environment and ``overrides``.

    A relative ``rate_card`` in the file is taken relative to the file, so a config directory
    can be moved (or mounted) as a whole.
    """
    path = config_file or (Path(os.environ["RECKON_CONFIG"]) if os.environ.get("RECKON_CONFIG") else None)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    settings = Settings.model_validate(FromFile(**overrides).model_dump(exclude_unset=True))
    if path is not None and not settings.rate_card.is_absolute() and "rate_card" not in overrides:
        beside = path.parent / settings.rate_card
        if beside.is_file():
            settings = settings.model_copy(update={"rate_card": beside})
    return settings


def load_rate_card(path: Path) -> RateCard:
    """Read and validate the rate card; errors name the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FileNotFoundError(f"rate card {path}: {error.strerror or error}") from None
    try:
        return RateCard.from_toml(text)
    except ValueError as error:
        raise ValueError(f"rate card {path}: {error}") from None
