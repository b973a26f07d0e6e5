"""``reckon dlq``: list, show, replay or purge the dead letters (billing.dead-letters).

Every command reads the queue as the broker user of ``AMQP_URL`` (in production ``reckon-operator``,
which may read ``billing.dead-letters`` and nothing else); ``replay`` publishes through
``RECKON_DLQ_REPLAY_URL``, the user that first sent the letters (deploy/README.md, Runbook: Dead
letters). Whatever the broker refuses is one line naming the user, the permission and the queue or
exchange, exit code 2.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import aio_pika
import typer
from aio_pika.abc import AbstractConnection
from pydantic import ValidationError
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
from accounting.dlq.settings import MAX_REPLAYS_LIMIT, ReplaySettings
from accounting.runtime.settings import Settings
from contracts import Topology
from observability import logs
from transport.connection import BrokerUnavailable, connect
from transport.redact import url_secrets
from transport.settings import problems

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
    """Connect to the broker named by the settings, run ``work``, disconnect; anything the broker
    refuses is one line."""

    async def main() -> T:
        connection = await connect(settings)
        async with connection:
            return await work(connection, Topology(settings.namespace))

    try:
        return run(main())
    except dlq_queue.DeadLettersRefused as refused:
        fail(str(refused))
    except aio_pika.exceptions.AMQPError as error:
        fail(f"the broker refused: {dlq_queue.broker_reason(error)}")


def replay_settings() -> ReplaySettings:
    try:
        replay = ReplaySettings()
    except ValidationError as error:
        fail(f"environment RECKON_DLQ_*: {problems(error)}")
    if replay.replay_url is not None:
        logs.hide_secrets(*url_secrets(replay.replay_url))  # the publishing user's password too
    return replay


@dataclass(frozen=True)
class ReplayTarget:
    """``RECKON_DLQ_REPLAY_URL`` with the TLS files of the settings (what ``connect`` needs)."""

    amqp_url: str
    tls_ca_file: Path | None
    tls_cert_file: Path | None
    tls_key_file: Path | None


async def publisher_for(settings: Settings, replay: ReplaySettings) -> AbstractConnection | None:
    """The connection of ``RECKON_DLQ_REPLAY_URL``'s user, or None (publish as ``AMQP_URL``'s)."""
    if replay.replay_url is None:
        return None
    target = ReplayTarget(
        replay.replay_url, settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file
    )
    try:
        return await connect(target)
    except BrokerUnavailable as error:
        raise BrokerUnavailable(f"RECKON_DLQ_REPLAY_URL: {error}") from None


def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 1000,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every dead letter, oldest first: ID, original queue, exchange and routing key, why it died,
    who sent it, how often it was replayed, and the start of its body.

    Nothing is consumed: the messages are read one at a time (no body is kept) and all given back,
    in order.
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


def dlq_show(
    ids: DeadLetterIds,
    full: Annotated[
        bool, typer.Option("--full", help=f"The whole body, not its first {dlq.SHOW_BYTES} bytes.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Everything about the named dead letters, their body included (its start, unless --full)."""
    settings = settings_from(config)
    try:
        letters = broker_command(
            settings, lambda connection, topology: dlq_queue.find_dead_letters(connection, topology, ids)
        )
    except dlq_queue.UnknownDeadLetters as unknown:
        fail(str(unknown))
    limit = None if full else dlq.SHOW_BYTES
    if as_json:
        print_json([dlq.detail(letter, limit) for letter in letters])
        return
    for letter in letters:
        console.print(dlq.detail_table(letter, limit))


def dlq_replay(
    ids: DeadLetterIds,
    max_replays: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=MAX_REPLAYS_LIMIT,
            help="Replay letters replayed fewer times than this (default RECKON_DLQ_MAX_REPLAYS, 3).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Republish the named dead letters where they were first published; remove each once confirmed.

    Published as their first sender (their user_id): through RECKON_DLQ_REPLAY_URL, that user's
    AMQP URL. One that no queue takes (returned), one signed by another user, and one replayed
    max_replays times already stay in dead letters. Exit code 1 unless all were replayed.
    """
    settings = settings_from(config)
    replay = replay_settings()
    limit = replay.max_replays if max_replays is None else max_replays
    timeout = settings.publish_timeout_seconds

    async def work(connection: AbstractConnection, topology: Topology) -> list[dlq_queue.ReplayOutcome]:
        publisher = await publisher_for(settings, replay)
        try:
            return await dlq_queue.replay_dead_letters(
                connection, topology, ids, timeout, publisher=publisher, max_replays=limit
            )
        finally:
            if publisher is not None:
                await publisher.close()

    try:
        outcomes = broker_command(settings, work)
    except dlq_queue.UnknownDeadLetters as unknown:
        fail(f"{unknown}; nothing was replayed")
    style = {"replayed": "green", "returned": "yellow", "failed": "red"}
    for outcome in outcomes:
        console.print(
            f"[{style[outcome.status]}]{outcome.status}[/] {escape(outcome.id)}: {escape(outcome.detail)}",
            soft_wrap=True,
        )
    if any(outcome.status != "replayed" for outcome in outcomes):
        raise typer.Exit(1)


def confirmed(question: str) -> bool:
    """Ask on stdin; end of input (no stdin) refuses with a clear message rather than "Aborted"."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        fail(NO_CONFIRMATION)


def _named(plan: dlq_queue.PurgePlan) -> str:
    more = plan.count - len(plan.ids)
    return ", ".join(plan.ids) + (f" and {more} more" if more else "")


def dlq_purge(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Purge only these IDs (default: every dead letter listed now).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask: for scripts.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete the dead letters listed now (or those named), for good (asks first unless --yes).

    Exactly the letters read before the question are deleted: one arriving while it asks stays.
    """
    if not yes and (sys.stdin is None or sys.stdin.closed):
        fail(NO_CONFIRMATION)
    settings = settings_from(config)
    queue = Topology(settings.namespace).dead_letters_queue.name
    named = list(ids or ())

    async def ask(plan: dlq_queue.PurgePlan) -> bool:
        if yes:
            return True
        console.print(f"{plan.count} dead letter(s) in {escape(plan.queue)}: {escape(_named(plan))}")
        which = "the" if named else "all"
        question = (
            f"Delete {which} {plan.count} dead letters listed? Any that arrive from now on stay. "
            "They cannot be replayed afterwards."
        )
        # In a thread: the connection's heartbeats go on while the operator thinks.
        return await asyncio.to_thread(confirmed, question)

    try:
        purged = broker_command(
            settings,
            lambda connection, topology: dlq_queue.purge_dead_letters(connection, topology, named, ask),
        )
    except dlq_queue.UnknownDeadLetters as unknown:
        fail(f"{unknown}; nothing was purged")
    if purged is None:
        errors.print("nothing purged")
        raise typer.Exit(1)
    if purged == 0:
        console.print(f"no dead letters in {queue}: nothing purged")
        return
    console.print(f"purged {purged} dead letters from {queue} (those listed; any that arrived since stay)")
