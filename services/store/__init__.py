"""The system of record: schema, migrations and repositories over SQLAlchemy (TiDB, SQLite)."""
