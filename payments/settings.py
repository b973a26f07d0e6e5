"""The reference payment consumer's settings: environment (``RECKON_*``, ``AMQP_URL``) over the
keys it knows of a TOML file (the deployment's shared ``reckon.toml``) over defaults.

Its own, not the coordinator's: a payment team configures the broker it reads from, the
namespace, whose documents it takes, and its ledger, and nothing of how reports are built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from transport.settings import BrokerClientSettings, load_settings


class PaymentSettings(BrokerClientSettings):
    # Unknown keys are ignored: the TOML file is shared with the coordinator's settings.
    model_config = SettingsConfigDict(env_prefix="RECKON_", extra="ignore", hide_input_in_errors=True)

    # From BrokerClientSettings: amqp_url, namespace, tls_ca_file, tls_cert_file, tls_key_file.
    coordinator_user: str | None = Field(default=None, min_length=1, max_length=255)
    """The broker user invoices and credit notes must come from (AMQP ``user_id``, verified by the
    broker). None: the consumer's own user (one user for everything, in development)."""
    payments_db: Path = Path("var/payments.sqlite3")
    """SQLite file of handled document ids and payments (``reckon payments --db``)."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    """On SIGTERM, how long the documents being handled may take before they are given back."""
    prefetch: int = Field(default=50, ge=1, le=10_000)

    @field_validator("payments_db")
    @classmethod
    def _payments_db_is_a_file(cls, value: Path) -> Path:
        if value.is_dir():
            raise ValueError(
                f"{value} is a directory; name the SQLite file, e.g. {value / 'payments.sqlite3'}"
            )
        return value


def load_payment_settings(config_file: Path | None = None, **overrides: Any) -> PaymentSettings:
    """Settings from ``config_file`` (or ``$RECKON_CONFIG``), the environment and ``overrides``."""
    return load_settings(PaymentSettings, config_file, **overrides)
