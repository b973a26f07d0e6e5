"""The accounting store: SQLAlchemy tables, Alembic migrations and the repository the service
layer writes reports, replies, invoices, credit notes and the outbox through.

May import ``core`` and ``contracts``; knows nothing of the broker or of any layer above it.
"""
