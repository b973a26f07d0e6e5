"""``reckon invoices render``: an invoice or credit note as an HTML or PDF document, from the store."""

from __future__ import annotations

import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from rich.markup import escape

from accounting.cli.common import ConfigOption, console, fail, settings_from, store_command
from accounting.documents.loader import load_document
from accounting.documents.parties import DirectoryError, DocumentContext, find_in_directory
from accounting.documents.view import Document, InvoiceDocument, render_html, render_pdf
from accounting.runtime.settings import Settings


class DocumentFormat(StrEnum):
    HTML = "html"
    PDF = "pdf"


RENDER_HELP = (
    "Render an invoice or a credit note as an HTML or PDF document, from what the store holds only."
    "\n\n"
    "The document shows the account, the period, the report revision and status, the rate card "
    "fingerprint, every line with its tier, the subtotal and the total in the invoice's currency; for "
    "a correction, the invoice it supersedes and the credit note that cancelled that one; for an "
    "invoice corrected since, the credit note that cancelled it and the invoice that corrects it; for "
    "a credit note, the invoice it cancels."
    "\n\n"
    "A PDF is binary: without --out it is written to stdout only when stdout is not a terminal "
    "(reckon invoices render ID -f pdf > invoice.pdf); to a terminal it is refused."
)


def register(invoices_app: typer.Typer) -> None:
    """Add ``render`` to the ``reckon invoices`` group."""
    invoices_app.command("render", help=RENDER_HELP)(render)


def render(
    document: Annotated[
        str, typer.Argument(metavar="ID", help="An invoice id or a credit note id.", show_default=False)
    ],
    fmt: Annotated[
        DocumentFormat, typer.Option("--format", "-f", help="The document's format.", case_sensitive=False)
    ] = DocumentFormat.HTML,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            dir_okay=False,
            help="Write the document to this file (replaced whole, never left half written). "
            "Without it, HTML goes to stdout, and PDF too when stdout is a pipe or a file.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Render an invoice or a credit note (``RENDER_HELP`` is its help)."""
    if fmt is DocumentFormat.PDF and out is None and stdout_is_terminal():
        fail("a PDF is binary: name a file with --out PATH (or redirect stdout to one)")
    try:
        wanted = UUID(document)
    except ValueError:
        fail(f"{document!r} is not an invoice or credit note id (a UUID)")
    found = store_command(config, lambda store: load_document(store, wanted))
    if found is None:
        fail(f"no invoice or credit note {wanted} in the store")
    context = document_context(settings_from(config), _account(found))
    body = render_pdf(found, context) if fmt is DocumentFormat.PDF else render_html(found, context).encode()
    if out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    try:
        write_whole(out, body)
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror or error}")
    console.print(
        f"{_kind(found)} {wanted} written to {escape(str(out))} ({fmt.value}, {len(body)} bytes)",
        soft_wrap=True,
    )


def document_context(settings: Settings, account_id: str) -> DocumentContext:
    """The seller, the account's directory entry, the locale and the calendar's time zone."""
    buyer = None
    if settings.account_directory is not None:
        try:
            buyer = find_in_directory(settings.account_directory, account_id)
        except DirectoryError as error:
            fail(str(error))
    return DocumentContext(
        seller=settings.seller_party(),
        buyer=buyer,
        locale=settings.document_locale,
        zone=settings.billing_calendar().zone,
    )


def _account(document: Document) -> str:
    if isinstance(document, InvoiceDocument):
        return document.invoice.account_id
    return document.credit_note.account_id


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def write_whole(path: Path, body: bytes) -> None:
    """Write ``body`` to ``path`` through a temporary file beside it, replaced in one step."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(body)
        os.chmod(temporary, 0o666 & ~_umask())  # what open() would have given, not mkstemp's 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kind(document: Document) -> str:
    return "invoice" if isinstance(document, InvoiceDocument) else "credit note"
