"""Sample ``InvoiceIssued`` messages for the payment consumer's tests."""

from __future__ import annotations

from decimal import Decimal

from contracts import InvoiceIssued, InvoiceLine, Period, invoice_id, report_id


def sample_invoice(account: str, period: str = "2026-10", total: str = "23.81") -> InvoiceIssued:
    amount = Decimal(total)
    return InvoiceIssued(
        invoice_id=invoice_id(account, period, 1),
        report_id=report_id(period, 1),
        revision=1,
        account_id=account,
        period=Period.month(period),
        currency="EUR",
        lines=(
            InvoiceLine(
                item="vcpu",
                description="Compute, vCPU",
                quantity=Decimal("744.000000"),
                unit="vCPU-hour",
                unit_price=Decimal("0.0320"),
                amount=amount,
            ),
        ),
        subtotal=amount,
        total=amount,
        rate_card="sha256:" + "0" * 64,
    )
