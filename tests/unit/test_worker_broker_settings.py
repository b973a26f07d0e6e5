"""A worker checks its broker URL as every party does (``BrokerClientSettings``), from the
environment only, and ``run_worker`` refuses a bad one in one line naming the variable, never the
password, with exit code 2."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import Period, UsageRecord
from observability import logs
from transport.settings import BrokerClientSettings
from workers.sdk import WorkerSettings, run_worker

SECRET = "Sup3rS3cret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name == "AMQP_URL" or name.startswith("RECKON_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def own_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[logs.SecretFilter]:
    """``run_worker`` registers its URL's secrets process-wide: here, in a filter of the test's own."""
    fresh = logs.SecretFilter()
    monkeypatch.setattr(logs, "SECRETS", fresh)
    yield fresh
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None:
            handler.removeFilter(fresh)


class Nothing:
    name = "nothing"

    async def usage(self, period: Period) -> list[UsageRecord]:
        return []


def test_worker_settings_are_broker_client_settings_with_the_same_defaults() -> None:
    settings = WorkerSettings()

    assert isinstance(settings, BrokerClientSettings)
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert (settings.namespace, settings.chunk_size, settings.prefetch) == ("", 500, 4)
    assert (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file) == (None, None, None)


@pytest.mark.parametrize(
    "url",
    [
        f"guest:{SECRET}@127.0.0.1:5672/",
        f"amqp:/guest:{SECRET}@127.0.0.1/",
        f"amqp://reckon:?{SECRET}@127.0.0.1/",
        f"amqp://reckon:#{SECRET}@127.0.0.1/",
        f"amqp://reckon:/{SECRET}@127.0.0.1/",
    ],
)
def test_a_malformed_amqp_url_is_refused_naming_the_variable(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQP_URL", url)

    with pytest.raises(ValidationError) as raised:
        WorkerSettings()

    assert "AMQP_URL" in str(raised.value)
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value)


def test_unknown_variables_are_ignored_and_only_the_shared_keys_of_the_config_file_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "reckon.toml"
    config.write_text(
        'namespace = "from-the-file"\ncoordinator_user = "reckon-coordinator"\n'
        'chunk_size = 7\nshutdown_grace_seconds = 99\nservices = ["compute"]\n'
    )
    monkeypatch.setenv("RECKON_CONFIG", str(config))
    monkeypatch.setenv("RECKON_NOT_A_WORKER_SETTING", "x")
    monkeypatch.setenv("RECKON_SERVICES", "compute,storage")  # the coordinator's, in a shared env

    settings = WorkerSettings()

    # What every role shares comes from the file; a worker's own keys only from the environment,
    # so the coordinator's shutdown_grace_seconds is never taken for the worker's.
    assert (settings.namespace, settings.coordinator_user) == ("from-the-file", "reckon-coordinator")
    assert (settings.chunk_size, settings.shutdown_grace_seconds) == (500, 10.0)
    monkeypatch.setenv("RECKON_NAMESPACE", "from-the-environment")
    assert WorkerSettings().namespace == "from-the-environment"


def test_the_url_may_come_as_reckon_amqp_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECKON_AMQP_URL", "amqps://reckon:p%40ss@mq.example.com:5671/")

    assert WorkerSettings().amqp_url == "amqps://reckon:p%40ss@mq.example.com:5671/"


def test_tls_files_are_checked_as_for_every_party(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECKON_TLS_CA_FILE", str(tmp_path / "missing.pem"))

    with pytest.raises(ValidationError, match="tls_ca_file"):
        WorkerSettings()


def test_run_worker_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AMQP_URL", f"amqp://reckon:?{SECRET}@127.0.0.1/")

    with pytest.raises(SystemExit) as exited:
        run_worker(Nothing())

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: settings of nothing (environment): AMQP_URL: ")
    assert "percent-encoded" in err
    assert SECRET not in err
