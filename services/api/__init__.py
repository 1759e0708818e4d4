"""The HTTP API: tenants, applications, pipelines and tasks (FastAPI)."""
