"""With ``RECKON_LOG_FORMAT=json`` every line a process writes is one JSON object — through a
broker restart, and when it stops on a fatal error — and a broker restart is one warning per
connection, never an error line (what an error-rate alert counts). Real processes, real broker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from contracts import Topology
from tests.broker import rabbitmqctl
from tests.e2e.platform import ROOT, platform
from tests.integration.support import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the file, each parsed as one JSON object (fails naming the first that is not)."""
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line[:200]!r}")
        assert isinstance(record, dict), f"{path.name} line {number}: {line[:200]}"
        records.append(record)
    return records


async def test_every_process_logs_json_through_a_broker_restart_with_one_warning_per_connection(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    store_url = f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"
    async with platform(amqp_url, connection, topology, tmp_path, store_url, accounts=20) as running:
        for service in ("compute", "storage"):
            await running.start_worker(service, log_format="json")
        await running.start_coordinator(log_format="json", reconnect_alert_seconds="120")
        try:
            await rabbitmqctl("stop_app")
        finally:
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")
        names = ("compute", "storage", "coordinator")
        await eventually(lambda: all(running.logged(name, " is back after ") for name in names), timeout=90)
        await connection.connected.wait()
        await running.close_period()
        await running.until(ReportStatus.COMPLETED, timeout=120)
        for process in running.processes.values():
            process.terminate()
        for process in running.processes.values():
            await asyncio.wait_for(process.wait(), 60)

    for name in names:
        records = json_lines(tmp_path / f"{name}.log")
        problems = [record for record in records if record.get("level") in ("error", "critical")]
        assert problems == [], f"{name}: {problems}"
        warnings = [record["event"] for record in records if record.get("level") == "warning"]
        closed = [event for event in warnings if event.startswith("broker connection ")]
        back = [record["event"] for record in records if " is back after " in str(record.get("event"))]
        assert len(closed) == len(back) >= 1, f"{name}: {closed} {back}"
        assert all("CONNECTION_FORCED" in event for event in closed), closed
        assert not [
            r
            for r in records
            if r.get("logger", "").startswith(("aiormq", "aio_pika")) and r["level"] == "warning"
        ]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["-m", "accounting.cli", "coordinator"], "coordinator_user is 'reckon-coordinator' but"),
        (["-m", "workers.compute", "serve", "--db", "{tmp}/compute.sqlite3"], "tls_ca_file"),
        (["-m", "accounting.cli", "payments"], "tls_ca_file"),
        (["-m", "accounting.cli", "reports", "list"], "is not a SQLAlchemy URL"),
    ],
    ids=["coordinator", "worker", "payments", "a command"],
)
async def test_a_fatal_error_is_one_json_record_naming_the_real_cause(
    command: list[str], expected: str, tmp_path: Path
) -> None:
    """Settings that can never work end a process at once (what can come later, a broker or its
    permissions, is waited for: tests/e2e/test_start_waits.py)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_")}
    tls = "coordinator" not in command
    environment.update(
        AMQP_URL="amqps://guest:not-the-password@127.0.0.1:5671/"
        if tls
        else "amqp://guest:guest@127.0.0.1:5672/",
        RECKON_LOG_FORMAT="json",
        RECKON_SERVICES="compute",
        RECKON_COORDINATOR_USER="reckon-coordinator",
        RECKON_RATE_CARD=str(ROOT / "config" / "rate-card.toml"),
        RECKON_STORE_URL="not-a-url" if "reports" in command else f"sqlite+aiosqlite:///{tmp_path}/r.sqlite3",
        RECKON_PAYMENTS_DB=str(tmp_path / "payments.sqlite3"),
    )
    if tls:
        environment["RECKON_TLS_CA_FILE"] = str(tmp_path / "no-such-ca.pem")
    arguments = [part.replace("{tmp}", str(tmp_path)) for part in command]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *arguments],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    output = tmp_path / "output.log"
    output.write_text(done.stdout + done.stderr)
    records = json_lines(output)
    last = records[-1]
    assert (last["level"], last["fatal"]) == ("error", True)
    assert expected in last["event"]
    assert "rabbitmq-server -detached" not in last["event"]
    assert "not-the-password" not in output.read_text()
