"""Invoice and credit-note documents: what a document shows (``view``), drawn as HTML from
``templates/`` or as PDF (``pdf``), read from the store (``loader``).

May import ``store``, ``infra`` and ``core``; never ``service`` or anything above it.
"""
