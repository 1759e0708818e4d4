"""A migrated SQLite control store and pipelines in it, for the deployer's tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from services.store import migrate
from services.store.control import ControlStore, Pipeline, PipelineSpec
from services.store.tokens import TokenCipher

REPO = Path(__file__).resolve().parents[4]
ECHO = REPO / "charts" / "examples" / "echo"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlite_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def cipher() -> TokenCipher:
    return TokenCipher(key=Fernet.generate_key())


@pytest.fixture
def store(engine: sa.Engine, cipher: TokenCipher) -> ControlStore:
    return ControlStore(engine=engine, cipher=cipher)


def new_pipeline(
    store: ControlStore,
    name: str = "echo",
    *,
    chart: str = str(ECHO),
    values: Mapping[str, Any] | None = None,
    scaling: Mapping[str, Any] | None = None,
) -> tuple[Pipeline, str]:
    """A pipeline of a fresh tenant and application, with its worker token."""
    tenant, _ = store.create_tenant(f"t-{name}")
    app = store.create_application(tenant_id=tenant.id, name="a")
    spec = PipelineSpec(name=name, chart=chart, values=values or {}, scaling=scaling or {})
    return store.create_pipeline(app=app, spec=spec)
