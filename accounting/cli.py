"""``reckon``: run the coordinator, a worker, the payment consumer, close a period, or the demo."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from accounting.app import start_coordinator
from accounting.broker import BrokerUnavailable, connect
from accounting.core.rate_card import RateCard
from accounting.render import invoice_lines_table
from accounting.scheduler import close_period
from accounting.settings import Settings, load_rate_card, load_settings
from contracts import ROUTING_REPORT_ABORTED, ROUTING_REPORT_COMPLETED, InvoiceIssued, Period, Topology

app = typer.Typer(
    name="reckon",
    help="Reckon: period-end usage reports and invoices, pulled from sub-services over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="RECKON_CONFIG", help="TOML config file (see config/reckon.toml)."),
]


def fail(message: str) -> NoReturn:
    errors.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    """Load settings; a bad value gives one line per problem naming the field, not a traceback."""
    try:
        return load_settings(config, **overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors(include_url=False)
        )
        fail(f"configuration{f' {config}' if config else ''}: {problems}")
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))


def card_from(settings: Settings) -> RateCard:
    try:
        return load_rate_card(settings.rate_card)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a broker that does not answer gives one clear line and exit code 2."""
    try:
        return asyncio.run(coroutine)
    except BrokerUnavailable as error:
        fail(str(error))


def month(value: str) -> Period:
    try:
        return Period.month(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="PERIOD") from None


def previous_month(now: datetime) -> str:
    year, month_number = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month_number:02d}"


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


@app.command()
def coordinator(config: ConfigOption = None) -> None:
    """Run the accounting coordinator until SIGTERM: one report per PeriodClosed."""
    configure_logging(verbose=True)
    settings = settings_from(config)
    try:
        settings.require_services()
    except ValueError as error:
        fail(str(error))
    card = card_from(settings)

    async def main() -> None:
        instance = await start_coordinator(settings, card=card)
        console.print(
            f"coordinator ready: services {', '.join(settings.services)}, "
            f"deadline {settings.deadline_seconds:g}s, namespace {settings.namespace or '(none)'}"
        )
        try:
            await until_signalled()
        finally:
            await instance.close()

    run(main())


@app.command("close-period")
def close_period_command(
    period: Annotated[str, typer.Argument(help="The billing month, YYYY-MM.")],
    config: ConfigOption = None,
    requested_by: Annotated[str, typer.Option(help="Who asks, recorded on the event.")] = "operator",
    wait: Annotated[bool, typer.Option(help="Wait for the report and print its outcome.")] = False,
) -> None:
    """Act as the scheduler: publish PeriodClosed for PERIOD."""
    billing_period = month(period)
    settings = settings_from(config)
    topology = Topology(settings.namespace)

    async def main() -> dict[str, Any] | None:
        connection = await connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            listener = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await channel.declare_exchange(topology.reports.name, topology.reports.kind, durable=True)
            for key in (ROUTING_REPORT_COMPLETED, ROUTING_REPORT_ABORTED):
                await listener.bind(topology.reports.name, key)
            await close_period(connection, topology, billing_period, requested_by)
            console.print(f"PeriodClosed {billing_period.period_id} published")
            if not wait:
                return None
            async with asyncio.timeout(settings.deadline_seconds + 60), listener.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    body: dict[str, Any] = json.loads(message.body)
                    if body.get("period", {}).get("period_id") == billing_period.period_id:
                        return body
        return None

    try:
        report = run(main())
    except TimeoutError:
        fail(f"no report for {billing_period.period_id} arrived; is a coordinator running?")
    if report is None:
        return
    if "reasons" in report:
        errors.print(f"[red]report {report['report_id']} aborted[/]")
        for reason in report["reasons"]:
            errors.print(
                f"  {reason.get('service') or '(report)'}: {reason['code']}: {escape(reason['message'])}"
            )
        raise typer.Exit(1)
    console.print(
        f"[green]report {report['report_id']} completed[/]: {len(report['invoices'])} invoices, "
        f"total {report['total']} {report['currency']}"
    )


@app.command()
def payments(config: ConfigOption = None) -> None:
    """Run a payment consumer: print each invoice once, dropping duplicates by invoice_id."""
    from accounting.payments import PaymentConsumer

    configure_logging(verbose=False)
    settings = settings_from(config)

    def show(invoice: InvoiceIssued) -> None:
        console.print(invoice_lines_table(invoice))

    async def main() -> None:
        connection = await connect(settings.amqp_url)
        async with connection:
            consumer = await PaymentConsumer.start(connection, Topology(settings.namespace), show)
            console.print("payment consumer waiting for invoices (Ctrl-C to stop)")
            await until_signalled()
            await consumer.stop()
            console.print(f"{len(consumer.invoices)} invoices, {consumer.duplicates} duplicates dropped")

    run(main())


def is_worker_program(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"workers.{name}.__main__") is not None
    except ModuleNotFoundError:
        return False


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help="The sub-service: a package under workers/, e.g. compute.")],
    db: Annotated[Path | None, typer.Option(help="Its own SQLite store.")] = None,
) -> None:
    """Run a sub-service (``python -m workers.NAME serve``) in this process."""
    if not name.isidentifier() or not is_worker_program(name):
        fail(f"no sub-service named {name!r}: expected a package workers/{name}/ with a __main__.py")
    arguments = [sys.executable, "-m", f"workers.{name}", "serve", *(["--db", str(db)] if db else [])]
    os.execv(sys.executable, arguments)


@app.command()
def demo(
    period: Annotated[str | None, typer.Option(help="Billing month YYYY-MM; default last month.")] = None,
    accounts: Annotated[int, typer.Option(min=1, max=500, help="Accounts in the sample.")] = 40,
    config: ConfigOption = None,
) -> None:
    """Run a whole billing period end to end on the local broker and print the report and invoices."""
    from accounting.demo import demo_namespace, run_demo

    configure_logging(verbose=False)
    billing_period = month(period or previous_month(datetime.now(UTC)))
    overrides: dict[str, Any] = {"namespace": demo_namespace()}
    if config is None and not os.environ.get("RECKON_SERVICES"):
        overrides["services"] = ("compute", "storage")
    settings = settings_from(config, **overrides)
    card = card_from(settings)
    console.print(
        f"[bold]Reckon demo[/]: period {billing_period.period_id}, broker {settings.amqp_url.split('@')[-1]}"
    )
    with tempfile.TemporaryDirectory(prefix="reckon-demo-") as workdir:
        result = run(run_demo(settings, card, billing_period, accounts, Path(workdir), console))
    if not result.ok:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
