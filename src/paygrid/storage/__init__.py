"""Storage adapter: SQLAlchemy 2 Core tables, engine set-up, Alembic migrations.

Domain code never imports this package; repositories in each context's ``repository.py`` do.
"""
