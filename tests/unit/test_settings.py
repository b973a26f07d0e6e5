"""Coordinator settings: a TOML file, overridden by the environment, with errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from accounting.settings import load_rate_card, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AMQP_URL",
        "RECKON_CONFIG",
        "RECKON_SERVICES",
        "RECKON_DEADLINE_SECONDS",
        "RECKON_NAMESPACE",
    ):
        monkeypatch.delenv(name, raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_config_and_rate_card_load() -> None:
    settings = load_settings(ROOT / "config" / "reckon.toml")

    assert settings.services == ("compute", "storage")
    assert settings.rate_card == ROOT / "config" / "rate-card.toml"
    card = load_rate_card(settings.rate_card)
    assert set(card.items) >= {"vcpu", "memory", "block_storage", "object_storage"}


def test_a_relative_rate_card_is_read_beside_the_config_file(tmp_path: Path) -> None:
    write(tmp_path / "card.toml", (ROOT / "config" / "rate-card.toml").read_text())
    config = write(tmp_path / "reckon.toml", 'services = ["compute"]\nrate_card = "card.toml"\n')

    assert load_settings(config).rate_card == tmp_path / "card.toml"


def test_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "reckon.toml", 'services = ["compute"]\ndeadline_seconds = 30\n')
    monkeypatch.setenv("RECKON_DEADLINE_SECONDS", "5")
    monkeypatch.setenv("RECKON_SERVICES", "compute, storage,network")
    monkeypatch.setenv("AMQP_URL", "amqp://u:p@broker:5672/")

    settings = load_settings(config)

    assert settings.deadline_seconds == 5
    assert settings.services == ("compute", "storage", "network")
    assert settings.amqp_url == "amqp://u:p@broker:5672/"


def test_the_config_file_can_come_from_reckon_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "reckon.toml", 'services = ["storage"]\nnamespace = "staging"\n')
    monkeypatch.setenv("RECKON_CONFIG", str(config))

    settings = load_settings()

    assert (settings.services, settings.namespace) == (("storage",), "staging")


@pytest.mark.parametrize(
    ("text", "field", "detail"),
    [
        ('services = ["Compute"]', "services", "'Compute'"),
        ('services = ["compute", "compute"]', "services", "listed twice: compute"),
        ('services = ["compute"]\ndeadline_seconds = 0', "deadline_seconds", "greater than 0"),
        ('services = ["compute"]\nservise = 1', "servise", "Extra inputs"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, text: str, field: str, detail: str) -> None:
    config = write(tmp_path / "reckon.toml", text)

    with pytest.raises(ValidationError) as raised:
        load_settings(config)

    message = str(raised.value)
    assert field in message
    assert detail in message


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.toml"):
        load_settings(tmp_path / "nowhere.toml")


def test_the_coordinator_needs_services_but_the_scheduler_does_not() -> None:
    settings = load_settings()

    assert settings.services == ()
    with pytest.raises(ValueError, match="no services configured"):
        settings.require_services()


def test_a_bad_rate_card_is_named_with_its_field(tmp_path: Path) -> None:
    card = write(
        tmp_path / "card.toml", 'currency = "EUR"\nminor_units = 2\n[items.vcpu]\ndescription = "x"\n'
    )

    with pytest.raises(ValueError, match=r"card\.toml.*items\.vcpu"):
        load_rate_card(card)
