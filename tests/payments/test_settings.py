"""The payment consumer's own settings: its defaults, the shared TOML file's keys it knows, and the
ones it ignores (they are the coordinator's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from payments.settings import PaymentSettings, load_payment_settings


def test_the_defaults_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RECKON_PAYMENTS_DB", "RECKON_COORDINATOR_USER", "RECKON_NAMESPACE", "RECKON_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = PaymentSettings()

    assert settings.payments_db == Path("var/payments.sqlite3")
    assert settings.coordinator_user is None
    assert settings.namespace == ""


def test_it_reads_the_shared_config_file_and_ignores_the_coordinators_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECKON_NAMESPACE", raising=False)
    monkeypatch.setenv("RECKON_COORDINATOR_USER", "reckon-coordinator")
    config = tmp_path / "reckon.toml"
    config.write_text('services = ["compute"]\nnamespace = "team-a"\ndeadline_seconds = 5\n')

    settings = load_payment_settings(config, payments_db=tmp_path / "ledger.sqlite3")

    assert settings.namespace == "team-a"
    assert settings.coordinator_user == "reckon-coordinator"
    assert settings.payments_db == tmp_path / "ledger.sqlite3"


def test_a_directory_as_the_ledger_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="payments_db"):
        PaymentSettings(payments_db=tmp_path)


def test_a_malformed_broker_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValidationError) as raised:
        PaymentSettings(amqp_url="http://user:s3cr3t-pw@host/")
    assert "s3cr3t-pw" not in str(raised.value)
    assert "amqp://" in str(raised.value)
