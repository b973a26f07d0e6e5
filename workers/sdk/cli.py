"""What the command line of every sub-service shares (``python -m workers.NAME``)."""

from __future__ import annotations

import typer

from contracts import Period


def month(value: str, param_hint: str = "--period") -> Period:
    """The calendar month ``YYYY-MM``; anything else is a usage error naming the option."""
    try:
        return Period.month(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=param_hint) from None
