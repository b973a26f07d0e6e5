"""``make bench``'s floor measures what it says: a service's whole answer, straight from its queue."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from aio_pika.abc import AbstractRobustConnection

from bench.floor import Floor, measure_answers
from bench.memory import TreePeak
from contracts import Period, Topology
from tests.integration.support import StaticService, record, serving

pytestmark = pytest.mark.integration


async def test_a_services_answer_is_timed_to_its_last_chunk(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    compute = StaticService(
        "compute", [record(f"acct-{n}", "vm-1", "vcpu", "3600", "vCPU-second") for n in range(25)]
    )
    storage = StaticService("storage", [record("acct-1", "vol-1", "block_storage", "1", "byte-second")])
    async with serving(connection, topology, compute, storage, chunk_size=10):
        answers = await measure_answers(amqp_url, topology, ["compute", "storage"], Period.month("2026-10"))

    assert {name: (answer.records, answer.chunks) for name, answer in answers.items()} == {
        "compute": (25, 3),
        "storage": (1, 1),
    }
    floor = Floor(answers, invoices=10, publish_seconds=1.0)
    assert floor.gather_seconds == max(answer.seconds for answer in answers.values())
    assert floor.seconds == floor.gather_seconds + 1.0


def test_the_tree_peak_counts_a_process_and_its_children_together() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alone = TreePeak(child.pid)
        alone.sample()
        mine = TreePeak(os.getpid())
        mine.sample()
    finally:
        child.kill()
        child.wait()

    assert alone.processes == 1 and alone.mb > 0
    assert mine.processes >= 2 and mine.mb > alone.mb
