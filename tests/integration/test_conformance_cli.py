"""``python -m conformance`` and ``reckon conformance`` as processes: the table, ``--json``, exit codes
(0 every check passed, 1 one did not, 2 the kit could not run)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts import Topology
from tests.integration.support import StaticService, serving
from tests.integration.test_conformance import Broken, raw_service, usage_records

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUICK = ("--period", "2026-10", "--timeout", "5", "--quiet-seconds", "0.5")


async def kit(amqp_url: str, topology: Topology, *arguments: str, reckon: bool = False) -> tuple[int, str]:
    """The kit as a process of its own (``reckon conformance`` with ``reckon``); exit code and output."""
    env = {**os.environ, "AMQP_URL": amqp_url, "RECKON_NAMESPACE": topology.namespace}
    env.pop("RECKON_CONFIG", None)
    program = ("-m", "accounting.cli", "conformance") if reckon else ("-m", "conformance")
    process = await asyncio.create_subprocess_exec(
        sys.executable, *program, *arguments,
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_a_conforming_service_exits_0_with_a_table_of_passed_checks(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with serving(connection, topology, StaticService("echo", usage_records(5)), chunk_size=2):
        code, output = await kit(amqp_url, topology, "echo", *QUICK)

    assert code == 0, output
    assert f"Conformance of echo (period 2026-10, namespace {topology.namespace})" in output
    for check in ("answered", "schema", "user_id", "chunks", "inventory", "redelivery", "limits"):
        assert any(check in line and "pass" in line for line in output.splitlines()), (check, output)
    assert "not checked" in output  # the impostor: optional, not asked for
    assert "PASS: echo passed every check" in output


async def test_a_wrong_unit_exits_1_naming_the_check_and_the_unit(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with raw_service(connection, topology, "broken", Broken(unit="bytes")):
        code, output = await kit(amqp_url, topology, "broken", *QUICK)

    assert code == 1, output
    [row] = [line for line in output.splitlines() if "fail" in line and "schema" in line]
    assert "'bytes'" in output, output
    assert "FAIL: broken: 1 failed" in output, row


async def test_reckon_conformance_execs_the_kit_and_json_gives_every_check(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    async with raw_service(connection, topology, "broken", Broken(unsigned=True)):
        code, output = await kit(amqp_url, topology, "broken", *QUICK, "--json", reckon=True)

    assert code == 1, output
    document = json.loads(output)
    assert document["service"] == "broken" and document["passed"] is False
    statuses = {check["id"]: check["status"] for check in document["checks"]}
    assert statuses["user_id"] == "fail"
    assert [status for check, status in statuses.items() if check != "user_id"] == (
        ["pass"] * 9 + ["not checked"] + ["pass"] * 2
    ), statuses


async def test_a_service_not_running_exits_1(amqp_url: str, topology: Topology) -> None:
    code, output = await kit(amqp_url, topology, "ghost", "--period", "2026-10", "--timeout", "1")

    assert code == 1, output
    assert "no consumer on queue" in output


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (("Not_A_Service",), "is not a service name"),
        (("echo", "--period", "2099-01"), "period 2099-01 is not over"),
        (("echo", "--period", "last"), "--period"),
    ],
    ids=["service-name", "open-period", "malformed-period"],
)
async def test_what_the_kit_cannot_run_with_exits_2_in_one_line(
    amqp_url: str, topology: Topology, arguments: tuple[str, ...], says: str
) -> None:
    code, output = await kit(amqp_url, topology, *arguments)

    assert code == 2, output
    assert says in output
    assert "Traceback" not in output


async def test_a_broker_that_does_not_answer_exits_2_without_the_password(topology: Topology) -> None:
    code, output = await kit("amqp://guest:s3cret-pw@127.0.0.1:1/", topology, "echo", "--period", "2026-10")

    assert code == 2, output
    assert "AMQP_URL" in output
    assert "s3cret-pw" not in output
    assert "Traceback" not in output
