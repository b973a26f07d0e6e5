"""``make bench``: Reckon against its peers in the same run, and a period end to end at scale.

    python -m bench                          # everything: peers, 10k and 100k accounts, SQLite and PostgreSQL
    python -m bench --accounts 10000 --backend sqlite --skip-peers
    python -m bench --profile var/bench/profile.speedscope.json   # py-spy on the coordinator

Absolute times on shared machines move by 2x between runs: read the ratios, measured back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.e2e import EndToEnd, run_end_to_end
from bench.flood import FloodResult, run_flood_bench
from bench.relay import Throughput, run_relay_bench
from bench.scatter import Latency, run_scatter_bench
from transport.redact import DEFAULT_AMQP_URL

POSTGRES = os.environ.get("RECKON_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def machine() -> str:
    cores = os.cpu_count()
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split("\n")[0].split()[1])
        memory = f", {total_kb / 2**20:.0f} GiB"
    return (
        f"{platform.node()}: {cores} cores{memory}, Python {platform.python_version()}, {platform.platform()}"
    )


def peers_table(scatter: tuple[Latency, Latency], relay: Throughput) -> Table:
    reckon, rpc = scatter
    table = Table(title="Reckon against its peers (same run)")
    table.add_column("what")
    table.add_column("Reckon", justify="right")
    table.add_column("peer", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("goal")
    table.add_row(
        "scatter-gather 8x10 p50",
        f"{reckon.p50 * 1000:.1f} ms",
        f"{rpc.p50 * 1000:.1f} ms (aio-pika RPC)",
        f"{reckon.p50 / rpc.p50:.2f}x",
        "≤ 1.2x",
    )
    table.add_row(
        "scatter-gather 8x10 p99",
        f"{reckon.p99 * 1000:.1f} ms",
        f"{rpc.p99 * 1000:.1f} ms (aio-pika RPC)",
        f"{reckon.p99 / rpc.p99:.2f}x",
        "",
    )
    table.add_row(
        f"outbox relay, {relay.messages} invoices",
        f"{relay.relay_per_second:,.0f} msg/s",
        f"{relay.raw_per_second:,.0f} msg/s (raw confirmed)",
        f"{relay.ratio:.2f}x",
        "≥ 0.5x",
    )
    return table


def flood_table(result: FloodResult) -> Table:
    table = Table(
        title=f"A small report beside a {result.chunks:,}-chunk flood to another (same coordinator)"
    )
    table.add_column("small report")
    table.add_column("median", justify="right")
    table.add_column("each", justify="right")
    for label, times in (("alone", result.alone), ("beside the flood", result.beside)):
        table.add_row(
            label,
            f"{statistics.median(times):.2f} s",
            ", ".join(f"{seconds:.2f}" for seconds in times),
        )
    table.add_row("slowdown", f"{result.slowdown:.1f}x", "")
    return table


def floor_table(result: EndToEnd) -> Table:
    """Where the floor of one run comes from, measured right after it on the same processes."""
    table = Table(title=f"The floor of {result.accounts:,} accounts ({result.backend}), same run")
    table.add_column("part")
    table.add_column("seconds", justify="right")
    table.add_column("what", justify="left")
    floor = result.floor
    if floor is None:
        return table
    for answer in floor.answers.values():
        table.add_row(
            f"{answer.service} answers alone",
            f"{answer.seconds:.1f}",
            f"{answer.records:,} records in {answer.chunks:,} chunks, straight to its queue, no coordinator",
        )
    table.add_row(
        "raw confirmed publish",
        f"{floor.publish_seconds:.1f}",
        f"{floor.invoices:,} invoices of 1.2 KB, plain aio-pika, persistent, confirmed",
    )
    table.add_row("floor", f"{floor.seconds:.1f}", "slowest answer + publish")
    if result.over_floor is not None:
        table.add_row("end to end", f"{result.total_seconds:.1f}", f"{result.over_floor:.2f}x the floor")
    return table


def end_to_end_table(results: list[EndToEnd]) -> Table:
    table = Table(title="Period end to end (PeriodClosed → COMPLETED, every invoice confirmed)")
    table.add_column("accounts", justify="right")
    table.add_column("store")
    table.add_column("approval")
    table.add_column("records", justify="right")
    table.add_column("invoices", justify="right")
    table.add_column("total", justify="right")
    stages = list(dict.fromkeys(stage for result in results for stage in result.stages))
    for stage in stages:
        table.add_column(stage.strip(), justify="right")
    table.add_column("floor", justify="right")
    table.add_column("total ÷ floor", justify="right")
    table.add_column("records/s", justify="right")
    table.add_column("invoices/s", justify="right")
    table.add_column("peak RSS MB (coord tree/coord/compute/storage)", justify="right")
    for result in results:
        rss = result.peak_rss_mb
        table.add_row(
            f"{result.accounts:,}",
            result.backend,
            result.approval,
            f"{result.records:,}",
            f"{result.invoices:,}",
            f"{result.total_seconds:.1f} s" + ("" if result.status == "completed" else f" ({result.status})"),
            *(f"{result.stages[stage]:.1f}" if stage in result.stages else "" for stage in stages),
            f"{result.floor.seconds:.1f} s" if result.floor else "",
            f"{result.over_floor:.2f}x" if result.over_floor else "",
            f"{result.records / result.total_seconds:,.0f}" if result.total_seconds else "",
            f"{result.invoices / result.stages['relay']:,.0f}" if result.stages.get("relay") else "",
            "/".join(
                f"{rss.get(name, float('nan')):.0f}"
                for name in ("coordinator tree", "coordinator", "compute", "storage")
            ),
        )
    return table


async def main(arguments: argparse.Namespace) -> None:
    console = Console(width=200)
    console.print(f"[bold]machine[/] {machine()}")
    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    if not arguments.skip_peers:
        scatter = await run_scatter_bench(amqp_url, rounds=arguments.rounds)
        relay = await run_relay_bench(amqp_url, messages=arguments.messages)
        console.print(peers_table(scatter, relay))
    if arguments.flood and not arguments.skip_peers:
        console.print(flood_table(await run_flood_bench(amqp_url, chunks=arguments.flood)))
    results = []
    profile = arguments.profile
    if profile is not None and shutil.which("py-spy") is None:
        console.print("[yellow]py-spy is not on PATH: no profile[/]")
        profile = None
    for accounts in arguments.accounts:
        for backend in arguments.backend:
            for approval in arguments.approval:
                console.print(f"end to end: {accounts:,} accounts on {backend}, approval {approval} …")
                target = (
                    None
                    if profile is None
                    else profile.with_name(f"{profile.stem}-{accounts}-{backend}-{approval}.json")
                )
                results.append(await run_end_to_end(accounts, backend, amqp_url, POSTGRES, target, approval))
                console.print(end_to_end_table(results[-1:]))
                console.print(floor_table(results[-1]))
    if len(results) > 1:
        console.print(end_to_end_table(results))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument(
        "--backend", nargs="*", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--skip-peers", action="store_true", help="only the end-to-end runs")
    parser.add_argument(
        "--approval",
        nargs="*",
        choices=["auto", "manual"],
        default=["auto"],
        help="issue at once, or as a draft approved by `reckon reports approve` (its time measured)",
    )
    parser.add_argument("--rounds", type=int, default=300, help="scatter-gathers per side")
    parser.add_argument("--messages", type=int, default=20_000, help="invoices per relay run")
    parser.add_argument(
        "--flood",
        type=int,
        default=100_001,
        help="chunks of the flood a small report runs beside (0: skip; skipped with --skip-peers)",
    )
    parser.add_argument("--profile", type=Path, help="record the coordinator with py-spy (speedscope JSON)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
