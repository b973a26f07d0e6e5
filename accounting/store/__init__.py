"""The accounting store: SQLAlchemy tables, Alembic migrations and the repository."""
