"""What every party's settings share: how to reach the broker (``AMQP_URL``, the TLS files), the
namespace, and where settings come from (the environment over a TOML file over defaults).

A party subclasses ``BrokerClientSettings`` with its own keys and its own ``model_config``
(``extra="forbid"`` where the file is its own, ``"ignore"`` where it shares one), and loads it
with ``load_settings``. Errors never show a password: ``hide_input_in_errors`` keeps raw values
out of them and the URL check quotes the URL through ``redact_url``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from transport.redact import DEFAULT_AMQP_URL
from transport.urls import amqp_url_problem


class BrokerClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECKON_", hide_input_in_errors=True)

    amqp_url: str = Field(
        default=DEFAULT_AMQP_URL, validation_alias=AliasChoices("AMQP_URL", "RECKON_AMQP_URL", "amqp_url")
    )
    """``amqp://`` or ``amqps://`` (TLS, configured by the ``tls_*`` settings) with a host."""
    namespace: str = Field(default="", max_length=128, pattern=r"^[A-Za-z0-9_-]*$")
    tls_ca_file: Path | None = None
    """PEM file of the CA(s) that sign the broker's certificate; the system's CAs when unset.
    Only with an ``amqps://`` URL."""
    tls_cert_file: Path | None = None
    """PEM client certificate for mutual TLS; needs ``tls_key_file``."""
    tls_key_file: Path | None = Field(default=None, validate_default=True)
    """PEM private key of ``tls_cert_file``; needs it."""
    reconnect_alert_seconds: float = Field(default=60.0, gt=0, le=3600)
    """A broker connection lost and not back within this long is logged as an error (before that,
    one warning: a broker restart is routine maintenance)."""

    @field_validator("amqp_url")
    @classmethod
    def _valid_amqp_url(cls, value: str) -> str:
        problem = amqp_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            if not value.is_file():
                raise ValueError(f"no such file: {value}")
            url = info.data.get("amqp_url")
            if url is not None and not url.startswith("amqps://"):
                raise ValueError("TLS files are used only with an amqps:// amqp_url")
        pairs = info.field_name == "tls_key_file" and "tls_cert_file" in info.data
        if pairs and (value is None) != (info.data["tls_cert_file"] is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return value

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


SettingsT = TypeVar("SettingsT", bound=BrokerClientSettings)

SHARED_KEYS = frozenset(
    {"amqp_url", "namespace", "tls_ca_file", "tls_cert_file", "tls_key_file", "coordinator_user",
     "reconnect_alert_seconds"}
)  # fmt: skip
"""What every role reads the same way from the deployment's one ``reckon.toml`` (under the
environment): where the broker is, the namespace of every queue, and who the coordinator is."""


class SharedKeysSource(PydanticBaseSettingsSource):
    """Only ``keys`` (``SHARED_KEYS`` unless told) of the TOML file at ``$RECKON_CONFIG``, for a
    role whose own keys come from the environment (a sub-service): it reads the same namespace as
    the coordinator and never a coordinator key that happens to share a name with one of its own."""

    def __init__(self, settings_cls: type[BaseSettings], keys: frozenset[str] = SHARED_KEYS) -> None:
        super().__init__(settings_cls)
        path = config_path(None)
        found = TomlConfigSettingsSource(settings_cls, toml_file=path)() if path is not None else {}
        self._values = {key: value for key, value in found.items() if key in keys}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def config_path(config_file: Path | None) -> Path | None:
    """``config_file``, or ``$RECKON_CONFIG``; a path given that is not a file raises FileNotFoundError."""
    path = config_file or (Path(os.environ["RECKON_CONFIG"]) if os.environ.get("RECKON_CONFIG") else None)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    return path


def load_settings(kind: type[SettingsT], config_file: Path | None = None, **overrides: Any) -> SettingsT:
    """``kind`` from ``config_file`` (or ``$RECKON_CONFIG``), the environment and ``overrides``."""
    path = config_path(config_file)

    class FromFile(kind):  # type: ignore[valid-type,misc]
        model_config = SettingsConfigDict(toml_file=path)

    return kind.model_validate(FromFile(**overrides).model_dump(exclude_unset=True))


def problems(error: ValidationError) -> str:
    """One line naming each field that was refused and why."""
    return "; ".join(
        f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors(include_url=False)
    )
