"""Two rotations of one pipeline's worker token at once, from two threads, on TiDB and on
SQLite: both read the same current token before either writes, and neither caller's new
token is lost (the compare-and-set in ``rotate_worker_token``)."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from services.store.control import ControlStore, TokenDigests, _pipelines
from services.store.tokens import TokenCipher
from tests.unit.services.deploy.conftest import new_pipeline

pytestmark = pytest.mark.integration

GRACE = dt.timedelta(minutes=5)


def test_two_rotations_at_once_keep_both_new_tokens(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ControlStore(engine=engine, cipher=TokenCipher(key=Fernet.generate_key()))
    pipeline, original = new_pipeline(store)
    read = _pipelines.worker_token_digests
    both_read = threading.Barrier(2, timeout=30)
    local = threading.local()

    def read_in_step(engine: sa.Engine, pipeline_id: str) -> TokenDigests | None:
        digests = read(engine, pipeline_id)
        if not getattr(local, "waited", False):  # only a thread's first read waits
            local.waited = True
            both_read.wait()
        return digests

    with monkeypatch.context() as patch, ThreadPoolExecutor(max_workers=2) as threads:
        patch.setattr(_pipelines, "worker_token_digests", read_in_step)
        rotations = [threads.submit(store.rotate_worker_token, pipeline, grace=GRACE)]
        rotations.append(threads.submit(store.rotate_worker_token, pipeline, grace=GRACE))
        tokens = [rotation.result(timeout=60)[1] for rotation in rotations]
    assert store.worker_token(pipeline.id) in tokens
    for token in tokens:
        assert store.verify_worker_token(pipeline_id=pipeline.id, token=token)
    assert not store.verify_worker_token(pipeline_id=pipeline.id, token=original)
