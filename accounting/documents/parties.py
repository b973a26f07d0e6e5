"""Who a document is from and to: the seller (from the configuration) and the buyer (from an
account directory when one is configured, else the account id alone), and how dates and money
are written for them (a locale and the billing calendar's time zone)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path

from babel import Locale, UnknownLocaleError

DIRECTORY_COLUMNS = ("account_id", "name", "address", "tax_id", "email")
"""The account directory's header: ``address`` may hold several lines (a quoted CSV field)."""


@dataclass(frozen=True)
class Party:
    name: str
    address: tuple[str, ...] = ()
    tax_id: str | None = None
    email: str | None = None

    def lines(self) -> tuple[str, ...]:
        """The party as printed: name, address lines, then tax id and e-mail when known."""
        extra = ((f"Tax id: {self.tax_id}",) if self.tax_id else ()) + ((self.email,) if self.email else ())
        return (self.name, *self.address, *extra)


@dataclass(frozen=True)
class DocumentContext:
    """What a document needs besides its messages."""

    seller: Party | None = None
    buyer: Party | None = None
    """The account's directory entry; None: the document names the account id alone."""
    locale: str = "en"
    zone: tzinfo = field(default=UTC)


def locale_problem(name: str) -> str | None:
    try:
        Locale.parse(name)
    except (UnknownLocaleError, ValueError) as error:
        return f"{name!r} is not a locale babel knows ({error})"
    return None


class DirectoryError(ValueError):
    """The account directory cannot be read; the message names the file and the line."""


def find_in_directory(path: Path, account_id: str) -> Party | None:
    """The account's entry in the CSV directory at ``path``, read until found (a directory of a
    million accounts is never held whole); None when it has no entry."""
    try:
        with path.open(newline="", encoding="utf-8") as file:
            return _find(csv.DictReader(file), account_id, path)
    except OSError as error:
        raise DirectoryError(f"account directory {path}: {error.strerror or error}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise DirectoryError(f"account directory {path}: {error}") from None


def _find(rows: csv.DictReader[str], account_id: str, path: Path) -> Party | None:
    missing = [name for name in ("account_id", "name") if name not in (rows.fieldnames or ())]
    if missing:
        raise DirectoryError(
            f"account directory {path}: the header lacks {', '.join(missing)} "
            f"(expected {', '.join(DIRECTORY_COLUMNS)})"
        )
    for row in rows:
        if row["account_id"] == account_id:
            if not (row.get("name") or "").strip():
                raise DirectoryError(
                    f"account directory {path} line {rows.line_num}: account {account_id} has no name"
                )
            return Party(
                name=row["name"].strip(),
                address=_address(row.get("address") or ""),
                tax_id=(row.get("tax_id") or "").strip() or None,
                email=(row.get("email") or "").strip() or None,
            )
    return None


def _address(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def party(
    name: str, address: Iterable[str] = (), tax_id: str | None = None, email: str | None = None
) -> Party:
    return Party(name, tuple(address), tax_id or None, email or None)
