"""Alembic migrations of the system of record (``wsched db upgrade``)."""
