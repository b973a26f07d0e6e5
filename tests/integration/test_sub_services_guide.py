"""docs/sub-services.md's example, exactly as printed, is a sub-service the conformance kit passes:
a process of its own (plain aio-pika, no Reckon code) against the real broker, checked by
``python -m conformance`` as a process."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.topology import declare_coordinator_topology, declare_usage_queues
from contracts import Topology
from transport.queues import wait_for_consumer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "sub-services.md"
MARKER = "<!-- example: raw sub-service -->"


def example_code() -> str:
    text = GUIDE.read_text()
    assert MARKER in text, f"{GUIDE} lost its example marker"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_example_is_about_forty_lines_and_imports_nothing_of_reckon() -> None:
    code = example_code()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 50, len(lines)
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    assert not [line for line in imports if re.search(r"\b(contracts|workers|accounting|transport)\b", line)]


async def test_the_guides_example_passes_the_conformance_kit(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    async with connection.channel() as channel:
        await declare_coordinator_topology(channel, topology)
    await declare_usage_queues(connection, topology, ["example"])  # the coordinator's job
    program = tmp_path / "example_service.py"
    program.write_text(example_code())
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_")}
    env.update(AMQP_URL=amqp_url, RECKON_NAMESPACE=topology.namespace)
    service = await asyncio.create_subprocess_exec(
        sys.executable, str(program), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await wait_for_consumer(connection, topology.usage_queue("example").name, timeout=60)
        kit = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "conformance", "example",
            "--period", "2026-10", "--timeout", "10", "--quiet-seconds", "1",
            env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(kit.communicate(), 180)
    finally:
        service.terminate()
        service_output, _ = await asyncio.wait_for(service.communicate(), 30)

    report = output.decode(errors="replace")
    assert kit.returncode == 0, report + service_output.decode(errors="replace")
    assert "PASS: example passed every check" in report
