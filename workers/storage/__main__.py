"""Command line of the storage sub-service: ``python -m workers.storage seed|serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from workers.sdk.cli import month
from workers.storage.seed import seed as seed_store
from workers.storage.service import StorageService
from workers.storage.store import StorageStore

app = typer.Typer(help="Reckon's storage sub-service (volumes and buckets).", no_args_is_help=True)

DbOption = Annotated[
    Path,
    typer.Option("--db", envvar="RECKON_STORAGE_DB", help="SQLite database of samples and subscriptions."),
]
DEFAULT_DB = Path("var/storage.sqlite3")


@app.command()
def seed(
    period: Annotated[str, typer.Option("--period", help="Billing month, YYYY-MM.")],
    db: DbOption = DEFAULT_DB,
    accounts: Annotated[int, typer.Option("--accounts", min=0, help="Number of accounts.")] = 40,
    rng_seed: Annotated[int, typer.Option("--rng-seed", help="Seed of the random generator.")] = 11,
) -> None:
    """Replace the database's content with deterministic demo data around one month."""
    summary = seed_store(db, month(period), accounts=accounts, rng_seed=rng_seed)
    Console().print(str(summary), markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(db: DbOption = DEFAULT_DB) -> None:
    """Answer usage requests from the accounting coordinator until stopped (AMQP_URL from env)."""
    # Imported here so the seed command works even where the SDK is not installed or not yet built.
    from workers.sdk import run_worker

    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.is_file():
        Console(stderr=True).print(
            f"warning: {db} does not exist yet; usage requests will fail until it is seeded",
            markup=False,
            highlight=False,
        )
    else:
        StorageStore(db).close()  # brings an older file's schema up to date (usage index, plans)
    run_worker(StorageService(db))


if __name__ == "__main__":
    app()
