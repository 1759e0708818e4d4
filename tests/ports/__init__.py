"""Contract cases for each port, run against its in-memory twin in ``tests/unit`` and
against its real adapter in ``tests/integration``, so the twin cannot drift from it."""
