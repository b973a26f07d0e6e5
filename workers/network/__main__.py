"""``python -m workers.network``: seed the network store with sample data, or serve usage requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from workers.sdk.cli import month

DEFAULT_DB = Path("var/network.sqlite3")

app = typer.Typer(
    name="network",
    help="Reckon's network sub-service: egress per interface in bytes, after each account's allowance.",
    no_args_is_help=True,
    add_completion=False,
)

DbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar="RECKON_NETWORK_DB",
        help="SQLite file of interface counter readings and plans (created if missing).",
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
    rng_seed: Annotated[int, typer.Option("--rng-seed", help="Seed of the random sample.")] = 13,
) -> None:
    """Replace the store's interfaces, readings and plans with a deterministic sample around PERIOD."""
    from workers.network.seed import seed as seed_store

    summary = seed_store(_prepare(db), month(period), accounts=accounts, rng_seed=rng_seed)
    Console(soft_wrap=True).print(str(summary), markup=False, highlight=False)


@app.command()
def serve(db: DbOption = DEFAULT_DB) -> None:
    """Answer usage requests for the network service until SIGTERM / SIGINT."""
    from workers.network.service import NetworkService
    from workers.sdk import run_worker

    run_worker(NetworkService(_prepare(db)))


if __name__ == "__main__":
    app()
