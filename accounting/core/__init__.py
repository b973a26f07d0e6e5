"""Accounting's pure core: the gather state machine, normalizing usage, rate cards and pricing,
invoices and corrections, the report lifecycle and reconciliation arithmetic.

No I/O and nothing of the shell: it imports ``contracts`` and the standard library's pure parts
only, so every rule of billing is testable without a broker or a database.
"""
