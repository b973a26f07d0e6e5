"""The ``reckon`` command: one module per command group, the tables they print, and the demo.

``reckon.py`` holds the Typer app and the small commands (close-period, demo, inspection, replay);
``processes`` (coordinator, relay, worker), ``dlq``, ``documents``, ``preview`` and ``reconcile``
register their groups on it; ``tables`` draws what they print. The top layer of accounting: it may
import every other package of it (and the payment consumer, to run it as ``reckon payments``).
"""

from __future__ import annotations


def main() -> None:
    """The ``reckon`` entry point (imported lazily so that ``accounting.cli.common`` stays light)."""
    from accounting.cli.reckon import main as run

    run()
