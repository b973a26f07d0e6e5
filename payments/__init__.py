"""The reference payment consumer: a downstream party of Reckon, written to be copied.

It consumes ``payments.invoices`` and ``payments.corrections`` (``consumer``), records each
invoice and credit note once in its own ledger (``ledger``), and runs as a process with health,
metrics and a graceful stop (``process``, ``cli``: ``python -m payments`` or ``reckon payments``)
under its own settings (``settings``).

It imports only ``contracts`` and the shared plumbing (``transport``, ``observability``): never
``accounting`` or ``workers``. That is the proof that the contract alone is enough to consume
invoices.
"""
