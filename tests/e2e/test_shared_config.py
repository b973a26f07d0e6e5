"""One source for the settings every role shares: a namespace (and the coordinator's broker user)
set only in the deployment's reckon.toml moves the coordinator's, the scheduler's and the
sub-service's queues alike, and a month closes — before, a worker read only RECKON_NAMESPACE and
every report aborted ``unroutable``. A coordinator connected as another user than the file's
``coordinator_user`` refuses to start, naming both. Real processes, real broker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.topology import delete_namespace
from contracts import Period, Topology
from tests.e2e.test_as_deployed import command, process
from tests.integration.support import eventually
from transport.queues import consumer_count
from workers.compute.seed import seed as seed_compute

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

ROOT = Path(__file__).resolve().parents[2]


def shared_file(tmp_path: Path, namespace: str, **extra: str) -> Path:
    path = tmp_path / "reckon.toml"
    lines = [
        'services = ["compute"]',
        "deadline_seconds = 60",
        f'rate_card = "{ROOT / "config" / "rate-card.toml"}"',
        f'namespace = "{namespace}"',
        *(f'{key} = "{value}"' for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def environment(amqp_url: str, config: Path, **settings: str) -> dict[str, str]:
    """No RECKON_NAMESPACE: the file is the one source."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_")}
    return {**env, "AMQP_URL": amqp_url, "RECKON_CONFIG": str(config), **settings}


async def test_a_namespace_set_in_the_file_only_moves_every_role_and_a_month_closes(
    amqp_url: str, connection: AbstractRobustConnection, tmp_path: Path
) -> None:
    topology = Topology(f"shared-{os.urandom(4).hex()}")
    config = shared_file(tmp_path, topology.namespace, coordinator_user="guest")
    seed_compute(tmp_path / "compute.sqlite3", Period.month("2026-10"), accounts=5)
    store = {"RECKON_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"}
    try:
        async with (
            process(tmp_path / "coordinator.log", environment(amqp_url, config, **store), "coordinator"),
            process(
                tmp_path / "compute.log",
                environment(amqp_url, config),
                "worker",
                "compute",
                "--db",
                str(tmp_path / "compute.sqlite3"),
            ),  # fmt: skip
        ):

            async def serving() -> bool:
                return await consumer_count(connection, topology.usage_queue("compute").name) >= 1

            await eventually(serving, timeout=60)
            code, output = await command(environment(amqp_url, config), "close-period", "2026-10", "--wait")
    finally:
        await delete_namespace(amqp_url, topology, ("compute",))

    assert code == 0, output + (tmp_path / "coordinator.log").read_text()
    assert "completed: 5 invoices" in output


async def test_a_coordinator_connected_as_another_user_than_the_files_refuses_to_start(
    amqp_url: str, tmp_path: Path
) -> None:
    config = shared_file(tmp_path, f"shared-{os.urandom(4).hex()}", coordinator_user="reckon-coordinator")
    store = {"RECKON_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"}

    code, output = await command(environment(amqp_url, config, **store), "coordinator")

    assert code == 2
    assert "coordinator_user is 'reckon-coordinator' but this coordinator connects as 'guest'" in " ".join(
        output.split()
    )
