"""The database: users, API tokens and usage, through SQLAlchemy, with Alembic migrations."""
