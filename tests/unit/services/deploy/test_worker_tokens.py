"""Worker tokens kept encrypted for deployers; authentication still uses the digest."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from services.settings import Settings
from services.store.control import (
    ControlStore,
    NotFound,
    TokenDigests,
    TokenUnavailable,
    _pipelines,
)
from services.store.schema import pipelines
from services.store.tokens import TokenCipher, derive_key
from tests.unit.services.deploy.conftest import new_pipeline

GRACE = dt.timedelta(minutes=5)


def test_the_token_is_stored_encrypted_and_read_back_for_a_deployer(
    store: ControlStore, engine: sa.Engine
) -> None:
    pipeline, token = new_pipeline(store)
    with engine.connect() as conn:
        row = conn.execute(sa.select(pipelines).where(pipelines.c.id == pipeline.id)).one()
    assert token not in row.worker_token_enc  # never in plain text
    assert store.worker_token(pipeline.id) == token
    assert store.verify_worker_token(pipeline_id=pipeline.id, token=token)


def test_a_token_needs_the_key_it_was_stored_with(store: ControlStore, engine: sa.Engine) -> None:
    pipeline, _ = new_pipeline(store)
    other = ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
    with pytest.raises(TokenUnavailable, match="WSCHED_SECRET_KEY"):
        other.worker_token(pipeline.id)
    with pytest.raises(TokenUnavailable, match="no key"):
        ControlStore(engine=engine).worker_token(pipeline.id)


def test_a_pipeline_created_without_a_cipher_has_no_token_to_give(engine: sa.Engine) -> None:
    pipeline, token = new_pipeline(ControlStore(engine=engine))
    store = ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
    with pytest.raises(TokenUnavailable, match="recreate the pipeline"):
        store.worker_token(pipeline.id)
    assert store.verify_worker_token(pipeline_id=pipeline.id, token=token)
    with pytest.raises(NotFound):
        store.worker_token("no-such-pipeline")


def test_the_development_key_is_derived_from_the_operator_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WSCHED_OPERATOR_KEY", raising=False)
    monkeypatch.delenv("WSCHED_SECRET_KEY", raising=False)
    dev = Settings(operator_key="dev-operator-key")  # type: ignore[arg-type]
    assert dev.effective_secret_key() == derive_key("dev-operator-key")
    assert dev.effective_secret_key() == Settings().effective_secret_key()  # deterministic
    other = Settings(operator_key="another")  # type: ignore[arg-type]
    assert other.effective_secret_key() != dev.effective_secret_key()
    key = Fernet.generate_key().decode()
    assert Settings(secret_key=key).effective_secret_key() == key.encode()  # type: ignore[arg-type]


def test_a_malformed_secret_key_is_refused_at_start_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSCHED_SECRET_KEY", "not-a-fernet-key")
    with pytest.raises(ValueError, match="secret_key") as info:
        Settings()
    assert "Fernet.generate_key" in str(info.value)
    assert "not-a-fernet-key" not in str(info.value)


def test_a_rotation_that_raced_with_another_loses_neither_token(
    store: ControlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second rotation commits between the first one's read and its write: the first
    reads again and goes after it, so the token each caller was handed stays valid (the
    first's as current, the second's as previous, for the grace)."""
    pipeline, original = new_pipeline(store)
    read = _pipelines.worker_token_digests
    other: list[str] = []

    def read_then_race(engine: sa.Engine, pipeline_id: str) -> TokenDigests | None:
        digests = read(engine, pipeline_id)
        if not other:
            other.append("racing")  # the racing rotation reads without racing again
            other[0] = store.rotate_worker_token(pipeline, grace=GRACE)[1]
        return digests

    monkeypatch.setattr(_pipelines, "worker_token_digests", read_then_race)
    _, mine = store.rotate_worker_token(pipeline, grace=GRACE)
    assert store.worker_token(pipeline.id) == mine
    assert store.verify_worker_token(pipeline_id=pipeline.id, token=mine)
    assert store.verify_worker_token(pipeline_id=pipeline.id, token=other[0])
    assert not store.verify_worker_token(pipeline_id=pipeline.id, token=original)
