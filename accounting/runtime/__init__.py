"""Running the coordinator: wiring its parts into a process (``app``), its settings and their
checks, what ``/readyz`` and ``/metrics`` look at (``ops``), and previews built with the same wiring.

May import ``service`` and everything below it; never ``cli``.
"""
