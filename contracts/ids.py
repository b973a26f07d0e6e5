"""Deterministic ids: every republish of the same thing carries the same id."""

from __future__ import annotations

from uuid import UUID, uuid5

RECKON_NAMESPACE = UUID("6f1c2a9e-53a4-4c8e-9a51-2d0c6f7b9e10")


def report_id(period_id: str, revision: int) -> UUID:
    return uuid5(RECKON_NAMESPACE, f"report/{period_id}/{revision}")


def invoice_id(account_id: str, period_id: str, revision: int) -> UUID:
    return uuid5(RECKON_NAMESPACE, f"invoice/{period_id}/{revision}/{account_id}")


def preview_report_id(period_id: str, revision: int) -> UUID:
    """A preview's report: never equal to a real report's id (previews are never reports)."""
    return uuid5(RECKON_NAMESPACE, f"preview-report/{period_id}/{revision}")


def preview_invoice_id(account_id: str, period_id: str, revision: int) -> UUID:
    """An invoice of a preview: never equal to an issued invoice's id."""
    return uuid5(RECKON_NAMESPACE, f"preview-invoice/{period_id}/{revision}/{account_id}")


def credit_note_id(account_id: str, period_id: str, revision: int) -> UUID:
    """The credit note a revision issues for an account's superseded invoice."""
    return uuid5(RECKON_NAMESPACE, f"credit-note/{period_id}/{revision}/{account_id}")
