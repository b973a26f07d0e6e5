"""The ``reckon`` commands as a user runs them: real processes, the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from accounting.amqp.topology import delete_namespace
from contracts import Topology

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEAD_BROKER = "amqp://guest:secret@127.0.0.1:1/"


def reckon(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accounting.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_runs_a_whole_period_and_prints_report_and_invoices(amqp_url: str) -> None:
    result = reckon("demo", "--period", "2026-10", "--accounts", "6", env={"AMQP_URL": amqp_url})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Report 2026-10 rev 1: COMPLETED" in result.stdout
    assert "Invoices received by the payment consumer" in result.stdout
    assert "0 duplicates dropped" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["demo", "--accounts", "2"],
        ["close-period", "2026-10"],
    ],
)
def test_a_broker_that_does_not_answer_gives_one_clear_line(command: list[str]) -> None:
    result = reckon(*command, env={"AMQP_URL": DEAD_BROKER}, timeout=60)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "AMQP_URL=amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert "rabbitmq-server -detached" in result.stderr
    assert "secret" not in result.stdout + result.stderr


def test_bad_configuration_names_the_field() -> None:
    result = reckon("close-period", "2026-10", env={"RECKON_SERVICES": "compute,Storage!"})

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "services" in result.stderr
    assert "'Storage!'" in result.stderr


def test_an_unknown_worker_is_refused_by_name() -> None:
    result = reckon("worker", "nosuch")

    assert result.returncode == 2
    assert "no sub-service named 'nosuch'" in result.stderr


@pytest.fixture
def namespace(amqp_url: str) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    yield name
    import asyncio

    asyncio.run(delete_namespace(amqp_url, Topology(name), ["compute", "storage"]))


def test_separate_processes_complete_a_period_through_close_period(
    amqp_url: str, namespace: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "RECKON_NAMESPACE": namespace,
        "RECKON_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3",
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for service in ("compute", "storage"):
            db = str(tmp_path / f"{service}.sqlite3")
            module = f"workers.{service}"
            seed = [
                sys.executable,
                "-m",
                module,
                "seed",
                "--db",
                db,
                "--period",
                "2026-10",
                "--accounts",
                "4",
            ]
            subprocess.run(seed, env=env, check=True, capture_output=True, timeout=60)
            processes.append(
                subprocess.Popen([sys.executable, "-m", module, "serve", "--db", db], env=env, cwd=ROOT)
            )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "accounting.cli", "coordinator", "--config", "config/reckon.toml"],
                env=env,
                cwd=ROOT,
            )
        )
        result = reckon("close-period", "2026-10", "--config", "config/reckon.toml", "--wait", env=env)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            assert process.wait(timeout=30) == 0, f"{process.args!r} did not stop cleanly on SIGTERM"

    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed" in result.stdout


def test_a_store_that_does_not_answer_gives_one_clear_line() -> None:
    """A command that runs once (the long-running processes wait instead: test_start_waits.py)."""
    result = reckon(
        "db",
        "upgrade",
        "--config",
        "config/reckon.toml",
        env={"RECKON_STORE_URL": "postgresql+asyncpg://reckon:secret@127.0.0.1:1/reckon"},
        timeout=60,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "the store at postgresql+asyncpg://reckon:***@127.0.0.1:1/reckon could not be opened" in result.stderr
    )
    assert "secret" not in result.stderr
