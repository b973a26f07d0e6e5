"""Coordinator settings: a TOML file, overridden by the environment, with errors naming the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError

from accounting.cli.common import settings_from
from accounting.runtime.settings import Settings, load_rate_card, load_settings
from contracts import UsageRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name == "AMQP_URL" or name.startswith("RECKON_"):
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


# Refusing nonsense at start ---------------------------------------------------------------------

SECRET = "Sup3rS3cret"


def refusal(**values: Any) -> str:
    """The one-line message of the refused settings (as ``reckon`` prints it)."""
    with pytest.raises(ValidationError) as raised:
        Settings(**values)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in raised.value.errors())


def test_a_service_name_follows_the_contract_rule_of_64_characters() -> None:
    longest, too_long = "a" * 64, "a" * 65

    assert Settings(services=(longest,)).services == (longest,)
    assert "at most 64" in refusal(services=(too_long,))
    for name in (longest, "compute", "net-2"):
        UsageRequest.model_validate(  # the contract accepts what the settings accept...
            {
                "request_id": "r",
                "report_id": "00000000-0000-0000-0000-000000000001",
                "service": name,
                "period": {
                    "period_id": "2026-10",
                    "start": "2026-10-01T00:00:00Z",
                    "end": "2026-11-01T00:00:00Z",
                },
                "deadline": "2026-11-01T00:00:30Z",
                "reply_to": "q",
            }
        )
    for name in (too_long, "Compute", "9lives", "net_2", "-x", ""):
        with pytest.raises(ValidationError):  # ...and refuses what they refuse
            Settings(services=(name,))


@pytest.mark.parametrize(
    ("values", "key", "detail"),
    [
        ({"deadline_seconds": 0}, "deadline_seconds", "greater than 0"),
        ({"deadline_seconds": 7200}, "deadline_seconds", "less than or equal to 3600"),
        ({"publish_timeout_seconds": 0.01}, "publish_timeout_seconds", "greater than or equal to 0.1"),
        ({"relay_claim_seconds": 30}, "relay_claim_seconds", "more than 3 * publish_timeout_seconds (30 s)"),
        (
            {"publish_timeout_seconds": 20},
            "relay_claim_seconds",
            "more than 3 * publish_timeout_seconds (60 s)",
        ),
        ({"relay_claim_seconds": 0.5}, "relay_claim_seconds", "greater than or equal to 1"),
        ({"lease_seconds": 2}, "lease_seconds", "greater than or equal to 3"),
        ({"resume_every_seconds": 86_400}, "resume_every_seconds", "less than or equal to 3600"),
        ({"resume_every_seconds": 0}, "resume_every_seconds", "greater than or equal to 0.1"),
        ({"relay_poll_seconds": 600}, "relay_poll_seconds", "less than or equal to 60"),
        ({"shutdown_grace_seconds": -1}, "shutdown_grace_seconds", "greater than or equal to 0"),
        ({"max_build_attempts": 0}, "max_build_attempts", "greater than or equal to 1"),
        ({"max_build_attempts": 21}, "max_build_attempts", "less than or equal to 20"),
        ({"max_reply_bytes": 512 * 1024 * 1024}, "max_reply_bytes", "less than or equal to"),
        (
            {"max_records_per_chunk": 20_000, "max_records_per_answer": 10_000},
            "max_records_per_answer",
            "20000",
        ),
        ({"namespace": "x" * 129}, "namespace", "at most 128"),
    ],
)
def test_nonsense_timeouts_and_limits_are_refused_naming_the_key(
    values: dict[str, Any], key: str, detail: str
) -> None:
    message = refusal(**values)

    assert message.startswith(f"{key}: ")
    assert detail in message


def test_the_defaults_and_their_documented_values_hold() -> None:
    settings = Settings()

    assert settings.relay_claim_seconds > 3 * settings.publish_timeout_seconds
    assert (settings.max_reply_bytes, settings.max_records_per_chunk) == (8 * 1024 * 1024, 10_000)
    assert (settings.max_chunks_per_answer, settings.max_records_per_answer) == (100_000, 10_000_000)
    assert (settings.max_attributes, settings.max_attribute_length) == (32, 256)
    assert settings.max_build_attempts == 3
    assert settings.service_users == {}
    assert (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file) == (None, None, None)


def test_service_users_come_from_the_environment_or_a_toml_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "reckon.toml",
        'services = ["compute", "storage"]\nservice_users = { compute = "reckon-compute" }\n',
    )
    assert load_settings(config).service_users == {"compute": "reckon-compute"}

    monkeypatch.setenv("RECKON_SERVICE_USERS", " compute=reckon-compute, storage = reckon-storage ")
    assert load_settings(config).service_users == {"compute": "reckon-compute", "storage": "reckon-storage"}


@pytest.mark.parametrize(
    ("users", "detail"),
    [
        ("compute=reckon-compute,network=reckon-network", "network not among the configured services"),
        ("compute", "entry 'compute' must be service=broker-user"),
        ("compute=", "entry 'compute=' must be service=broker-user"),
        ("compute=a,compute=b", "service 'compute' listed twice"),
        ({"compute": "has space"}, "broker user 'has space'"),
        ({"Compute": "x"}, "service name 'Compute'"),
    ],
)
def test_bad_service_users_are_refused(users: Any, detail: str) -> None:
    message = refusal(services=("compute", "storage"), service_users=users)

    assert message.startswith("service_users")
    assert detail in message


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        (f"amqp://u:{SECRET}@broker:notaport/", "cannot be parsed"),
        (f"amqp://u:{SECRET}@broker:70000/", "cannot be parsed"),
        (f"amqp://u:{SECRET}@broker:0/", "port must be from 1 to 65535"),
        (f"http://u:{SECRET}@broker/", "must start with amqp:// or amqps://"),
        (f"u:{SECRET}@broker:5672/", "must start with amqp:// or amqps://"),
        (f"amqp:u:{SECRET}@broker/", "must start with amqp:// or amqps://"),
        (f"amqp://u:{SECRET}@/", "names no host"),
        (f"amqp://u:{SECRET}@broker/ vhost", "without spaces"),
        (f"amqp://u:{SECRET}/x@broker/", "cannot be parsed"),
        (f"amqps://u:{SECRET}@broker/?cafile=/ca.pem", "set tls_ca_file"),
        (f"amqp%3A%2F%2Fu%3A{SECRET}%40broker", "must start with amqp://"),
        ("", "without spaces"),
    ],
)
def test_a_bad_amqp_url_is_refused_without_its_password(url: str, detail: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(amqp_url=url)

    assert detail in refusal(amqp_url=url)
    assert refusal(amqp_url=url).startswith("amqp_url: ")
    assert SECRET not in str(raised.value)
    assert SECRET not in repr(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@127.0.0.1:5672/",
        "amqps://billing:p%40ss@mq.example.com:5671/prod",
        "amqp://u:p@ss@broker/",  # an unencoded '@' in the password: the last '@' ends it
        "amqp://[::1]:5672/",
        "amqp://broker",
    ],
)
def test_good_amqp_urls_are_accepted(url: str) -> None:
    assert Settings(amqp_url=url).amqp_url == url


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        (f"mysql+aiomysql://u:{SECRET}@db/reckon", "driver 'mysql+aiomysql' is not supported"),
        (f"postgresql://u:{SECRET}@db/reckon", "driver 'postgresql' is not supported"),
        ("sqlite:///var/reckon.db", "driver 'sqlite' is not supported"),
        (f"postgresql+asyncpg://u:{SECRET}@db:port/reckon", "is not a SQLAlchemy URL"),
        (f"u:{SECRET}@db/reckon", "is not a SQLAlchemy URL"),
        (f"postgresql+asyncpg://u:{SECRET}@extra@db/reckon", "percent-encode it as %40"),
        (f"postgresql+asyncpg://u:{SECRET}@/reckon", "names no host"),
        (f"postgresql+asyncpg://u:{SECRET}@db", "names no database"),
        ("sqlite+aiosqlite://", "needs a file"),
        ("sqlite+aiosqlite:///:memory:", "needs a file"),
    ],
)
def test_a_bad_store_url_is_refused_without_its_password(url: str, detail: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(store_url=url)

    message = refusal(store_url=url)
    assert message.startswith("store_url: ")
    assert detail in message
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///var/reckon.sqlite3",
        "sqlite+aiosqlite:////abs/reckon.sqlite3",
        "postgresql+asyncpg://reckon:s%40cret@db:5432/reckon",
        "postgresql+asyncpg:///reckon?host=/run/postgresql",
    ],
)
def test_good_store_urls_are_accepted(url: str) -> None:
    assert Settings(store_url=url).store_url == url


def test_tls_files_must_exist_go_together_and_need_amqps(tmp_path: Path) -> None:
    ca, cert, key = (write(tmp_path / name, "PEM") for name in ("ca.pem", "cert.pem", "key.pem"))
    tls = "amqps://u:p@broker:5671/"

    settings = Settings(amqp_url=tls, tls_ca_file=ca, tls_cert_file=cert, tls_key_file=key)
    assert (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file) == (ca, cert, key)
    assert "tls_ca_file: " in refusal(amqp_url=tls, tls_ca_file=tmp_path / "missing.pem")
    assert "no such file" in refusal(amqp_url=tls, tls_ca_file=tmp_path / "missing.pem")
    assert "go together" in refusal(amqp_url=tls, tls_cert_file=cert)
    assert "go together" in refusal(amqp_url=tls, tls_key_file=key)
    assert "only with an amqps://" in refusal(amqp_url="amqp://broker/", tls_ca_file=ca)


def test_tls_files_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = write(tmp_path / "ca.pem", "PEM")
    monkeypatch.setenv("AMQP_URL", "amqps://broker/")
    monkeypatch.setenv("RECKON_TLS_CA_FILE", str(ca))

    assert load_settings().tls_ca_file == ca


def test_the_cli_prints_one_line_naming_the_key_and_never_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "reckon.toml",
        f'amqp_url = "amqp://u:{SECRET}@broker:x/"\nstore_url = "mysql://u:{SECRET}@db/x"\n'
        f'services = ["{"a" * 65}"]\n',
    )

    with pytest.raises(typer.Exit):
        settings_from(config)

    printed = capsys.readouterr().err
    assert "amqp_url: " in printed.lower()
    assert "store_url: " in printed
    assert "services: " in printed
    assert SECRET not in printed
    assert printed.count("\n") == 1
