"""What every long-running Reckon process shares to be operated: an HTTP server for ``/healthz``,
``/readyz`` and ``/metrics`` (``observability.http``), JSON logs with bound context
(``observability.logs``) and W3C trace context (``observability.tracing``).

It imports neither ``accounting`` nor ``workers`` (import-linter checks it), so both use it without
ever importing each other.
"""
