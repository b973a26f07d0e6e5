"""``python -m workers.compute``: seed the compute store with sample data, or serve usage requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from workers.sdk.cli import month

DEFAULT_DB = Path("var/compute.sqlite3")

app = typer.Typer(
    name="compute",
    help="Reckon's compute sub-service: instance usage in vCPU-seconds and MiB-seconds.",
    no_args_is_help=True,
    add_completion=False,
)

DbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar="RECKON_COMPUTE_DB",
        help="SQLite file of instance events (created if missing).",
        dir_okay=False,
    ),
]


def _prepare(db: Path) -> Path:
    db.parent.mkdir(parents=True, exist_ok=True)
    return db


@app.command()
def seed(
    period: Annotated[str, typer.Option("--period", help="Billing month, YYYY-MM.")],
    db: DbOption = DEFAULT_DB,
    accounts: Annotated[int, typer.Option("--accounts", min=1, help="How many accounts.")] = 40,
    rng_seed: Annotated[int, typer.Option("--rng-seed", help="Seed of the random sample.")] = 7,
) -> None:
    """Replace the store's events with a deterministic sample around PERIOD."""
    from workers.compute.seed import seed as seed_store

    billing_period = month(period)
    summary = seed_store(_prepare(db), billing_period, accounts=accounts, rng_seed=rng_seed)
    Console(soft_wrap=True).print(
        f"seeded [bold]{escape(str(db))}[/bold] for {billing_period.period_id}: {summary.accounts} accounts, "
        f"{summary.instances} instances, {summary.events} events"
    )


@app.command()
def serve(db: DbOption = DEFAULT_DB) -> None:
    """Answer usage requests for the compute service until SIGTERM / SIGINT."""
    from workers.compute.service import ComputeService
    from workers.sdk import run_worker

    run_worker(ComputeService(_prepare(db)))


if __name__ == "__main__":
    app()
