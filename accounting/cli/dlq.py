"""``reckon dlq``: list, show, replay or purge the dead letters (billing.dead-letters)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from aio_pika.abc import AbstractConnection
from rich.markup import escape

from accounting.cli.common import (
    ConfigOption,
    JsonOption,
    T,
    console,
    errors,
    fail,
    print_json,
    run,
    settings_from,
)
from accounting.dlq import letters as dlq
from accounting.dlq import queue as dlq_queue
from accounting.runtime.settings import Settings
from contracts import Topology
from transport.connection import connect

DeadLetterIds = Annotated[list[str], typer.Argument(help="Dead-letter IDs, as `reckon dlq list` shows them.")]

NO_CONFIRMATION = "no confirmation on stdin: pass --yes to purge dead letters from a script"


def register(app: typer.Typer) -> None:
    """Add the ``reckon dlq`` group: ``list``, ``show``, ``replay`` and ``purge``."""
    dlq_app = typer.Typer(
        help="Dead letters (billing.dead-letters): list, show, replay or purge them.", no_args_is_help=True
    )
    dlq_app.command("list")(dlq_list)
    dlq_app.command("show")(dlq_show)
    dlq_app.command("replay")(dlq_replay)
    dlq_app.command("purge")(dlq_purge)
    app.add_typer(dlq_app, name="dlq")


def broker_command(settings: Settings, work: Callable[[AbstractConnection, Topology], Awaitable[T]]) -> T:
    """Connect to the broker named by the settings, run ``work``, disconnect."""

    async def main() -> T:
        connection = await connect(settings)
        async with connection:
            return await work(connection, Topology(settings.namespace))

    return run(main())


def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 1000,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every dead letter, oldest first: ID, original queue, exchange and routing key, why it died.

    Nothing is consumed: the messages are read and all given back, in order.
    """
    settings = settings_from(config)
    letters, total = broker_command(
        settings, lambda connection, topology: dlq_queue.list_dead_letters(connection, topology, limit)
    )
    if as_json:
        print_json([dlq.summary(letter) for letter in letters])
    else:
        queue = Topology(settings.namespace).dead_letters_queue.name
        console.print(dlq.list_table(letters, queue, total))


def dlq_show(ids: DeadLetterIds, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Everything about the named dead letters, their body included."""
    settings = settings_from(config)
    try:
        letters = broker_command(
            settings, lambda connection, topology: dlq_queue.find_dead_letters(connection, topology, ids)
        )
    except dlq_queue.UnknownDeadLetters as unknown:
        fail(str(unknown))
    if as_json:
        print_json([dlq.detail(letter) for letter in letters])
        return
    for letter in letters:
        console.print(dlq.detail_table(letter))


def dlq_replay(ids: DeadLetterIds, config: ConfigOption = None) -> None:
    """Republish the named dead letters where they were first published; remove each once confirmed.

    One that no queue takes (returned) stays in dead letters. Exit code 1 unless all were replayed.
    """
    settings = settings_from(config)
    timeout = settings.publish_timeout_seconds
    try:
        outcomes = broker_command(
            settings,
            lambda connection, topology: dlq_queue.replay_dead_letters(connection, topology, ids, timeout),
        )
    except dlq_queue.UnknownDeadLetters as unknown:
        fail(f"{unknown}; nothing was replayed")
    style = {"replayed": "green", "returned": "yellow", "failed": "red"}
    for outcome in outcomes:
        console.print(
            f"[{style[outcome.status]}]{outcome.status}[/] {escape(outcome.id)}: {escape(outcome.detail)}"
        )
    if any(outcome.status != "replayed" for outcome in outcomes):
        raise typer.Exit(1)


def confirmed(question: str) -> bool:
    """Ask on stdin; end of input (no stdin) refuses with a clear message rather than "Aborted"."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        fail(NO_CONFIRMATION)


def dlq_purge(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask: for scripts.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete every dead letter, for good (asks first unless --yes)."""
    if not yes and (sys.stdin is None or sys.stdin.closed):
        fail(NO_CONFIRMATION)
    settings = settings_from(config)
    queue = Topology(settings.namespace).dead_letters_queue.name
    if not yes:
        total = broker_command(settings, dlq_queue.count_dead_letters)
        if not confirmed(f"Delete all {total} dead letters in {queue}? They cannot be replayed afterwards."):
            errors.print("nothing purged")
            raise typer.Exit(1)
    purged = broker_command(settings, dlq_queue.purge_dead_letters)
    console.print(f"purged {purged} dead letters from {queue}")
