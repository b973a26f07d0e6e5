"""The deployment's commands as the deployment runs them: each a process of its own, as its own
broker user with exactly the permissions of deploy/dev-infra/rabbitmq/definitions.json.

`reckon coordinator` (relay off), `reckon relay`, `reckon worker compute`, `reckon payments` and the
CronJob's `reckon close-period --wait`, then an operator's `reckon replay --force` from the
coordinator's pod (its user): a month closes, every invoice is paid once, the one correction arrives.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts import Topology
from payments.ledger import SqlLedger
from tests.integration.support import eventually
from tests.integration.test_least_privilege import role
from transport.queues import consumer_count

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

ROOT = Path(__file__).resolve().parents[2]
PERIOD = "2026-10"


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def environment(url: str, topology: Topology, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_")}
    return {
        **env,
        "AMQP_URL": url,
        "RECKON_NAMESPACE": topology.namespace,
        **{f"RECKON_{key.upper()}": value for key, value in settings.items()},
    }


@asynccontextmanager
async def process(
    log: Path, env: dict[str, str], *arguments: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as output:
        started = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "accounting.cli", *arguments,
            env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield started
    finally:
        if started.returncode is None:
            started.terminate()
            try:
                await asyncio.wait_for(started.wait(), 30)
            except TimeoutError:
                started.kill()
                await started.wait()


async def command(env: dict[str, str], *arguments: str) -> tuple[int, str]:
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounting.cli", *arguments,
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(done.communicate(), 180)
    assert done.returncode is not None
    return done.returncode, output.decode(errors="replace")


async def test_a_month_closes_with_every_role_as_its_own_process_and_broker_user(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    compute_db = tmp_path / "compute.sqlite3"
    seeded = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.compute", "seed", "--period", PERIOD, "--db", str(compute_db),
        "--accounts", "5", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    seed_output, _ = await seeded.communicate()
    assert seeded.returncode == 0, seed_output
    ledger_path = tmp_path / "payments.sqlite3"
    store = f"sqlite+aiosqlite:///{tmp_path / 'reckon.sqlite3'}"

    with (
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator_url),
        role(amqp_url, topology, "reckon-compute") as (compute_user, compute_url),
        role(amqp_url, topology, "reckon-payments") as (_, payments_url),
        role(amqp_url, topology, "reckon-scheduler") as (scheduler_user, scheduler_url),
    ):
        coordinator_env = environment(
            coordinator_url,
            topology,
            services="compute",
            service_users=f"compute={compute_user}",
            scheduler_user=scheduler_user,
            store_url=store,
            rate_card=str(ROOT / "config" / "rate-card.toml"),
            deadline_seconds="60",
            relay="false",
            relay_poll_seconds="0.2",
            dead_letters="policy",  # as deploy/base/config: definitions.json's policy names the DLX
        )
        async with AsyncExitStack() as running:
            coordinator = await running.enter_async_context(
                process(tmp_path / "coordinator.log", coordinator_env, "coordinator")
            )
            # Started together on an empty store, as a rollout does: both migrate at start, one
            # waits for the other (the migration lock).
            await running.enter_async_context(process(tmp_path / "relay.log", coordinator_env, "relay"))
            await eventually(lambda: "coordinator ready" in read(tmp_path / "coordinator.log"), timeout=60)
            worker = await running.enter_async_context(
                process(
                    tmp_path / "compute.log",
                    environment(compute_url, topology, coordinator_user=coordinator_user),
                    "worker",
                    "compute",
                    "--db",
                    str(compute_db),
                )
            )
            payments = await running.enter_async_context(
                process(
                    tmp_path / "payments.log",
                    environment(payments_url, topology, coordinator_user=coordinator_user),
                    "payments",
                    "--db",
                    str(ledger_path),
                )
            )

            def logs() -> str:
                return "\n".join(
                    f"--- {name}\n{(tmp_path / f'{name}.log').read_text(errors='replace')}"
                    for name in ("coordinator", "relay", "compute", "payments")
                )

            async def consumed(queue: str) -> bool:
                return await consumer_count(connection, queue) > 0

            await eventually(lambda: consumed(topology.usage_queue("compute").name), timeout=60)
            await eventually(lambda: consumed(topology.payments_queue.name), timeout=60)
            code, output = await command(
                environment(scheduler_url, topology), "close-period", PERIOD, "--wait",
                "--requested-by", "cronjob/reckon-close-period",
            )  # fmt: skip
            assert code == 0, f"{output}\n{logs()}"
            assert "completed" in output, output

            ledger = await SqlLedger.open(ledger_path)
            try:

                async def paid(count: int) -> bool:
                    return await ledger.count() == count

                await eventually(lambda: paid(5), timeout=60)

                # One account's usage is found to be higher; the operator replays from the
                # coordinator's pod, as its user: that account's credit note and corrected invoice
                # reach the payment consumer, and no other account gets either.
                with sqlite3.connect(compute_db) as compute_store:
                    compute_store.execute(
                        "UPDATE instance_events SET vcpus = vcpus + 1 "
                        "WHERE kind != 'delete' AND account_id = "
                        "(SELECT account_id FROM instance_events WHERE kind = 'create' ORDER BY at LIMIT 1)"
                    )
                code, output = await command(coordinator_env, "replay", PERIOD, "--force")
                assert code == 0, f"{output}\n{logs()}"
                await eventually(lambda: paid(7), timeout=60)  # 5 invoices, 1 credit note, 1 corrected
            finally:
                await ledger.close()
            for name, started in (("coordinator", coordinator), ("compute", worker), ("payments", payments)):
                assert started.returncode is None, f"{name} exited\n{logs()}"
