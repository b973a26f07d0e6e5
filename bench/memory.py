"""Memory as a container's limit sees it: a process and all its descendants, sampled together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct child processes (the coordinator's pricing workers)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found.extend(descendants(child))
    return found


def status_mb(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` size in MB (``VmRSS`` now, ``VmHWM`` the peak so far); 0 once gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """The process's own peak resident set so far, in MB (Linux)."""
    return status_mb(pid, "VmHWM")


@dataclass
class TreePeak:
    """The largest sum of the resident sets of a process and its descendants seen at one instant."""

    pid: int
    mb: float = 0.0
    processes: int = 0

    def sample(self) -> None:
        tree = [self.pid, *descendants(self.pid)]
        total = sum(status_mb(pid, "VmRSS") for pid in tree)
        if total > self.mb:
            self.mb, self.processes = total, len(tree)


@asynccontextmanager
async def sampling(peak: TreePeak, every: float = 0.2) -> AsyncIterator[TreePeak]:
    """Sample ``peak`` every ``every`` seconds while the block runs."""

    async def loop() -> None:
        while True:
            await asyncio.to_thread(peak.sample)
            await asyncio.sleep(every)

    task = asyncio.create_task(loop())
    try:
        yield peak
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        peak.sample()
