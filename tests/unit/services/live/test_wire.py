"""The records of wsched.events: what the grain encodes, the API decodes."""

from __future__ import annotations

import pytest

from actors.pipeline.events import EventBatch, StatusChange
from actors.pipeline.model import GrainKey
from services.live import wire
from services.live.wire import BadEvent, decode, encode


def test_a_batch_round_trips_keyed_by_its_pipeline() -> None:
    change = StatusChange(task_id="t1", status="succeeded", attempt=2)
    batch = EventBatch(grain=GrainKey(pipeline_id="p1"), changes=(change,), counts={"queued": 3})
    [(key, value)] = encode(batch)
    assert key == b"p1"
    got = decode(value)
    assert (got.pipeline_id, got.changes, dict(got.counts)) == ("p1", (change,), {"queued": 3})


def test_a_large_batch_is_cut_into_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_CHANGES_PER_RECORD", 2)
    changes = tuple(StatusChange(task_id=f"t{i}", status="queued", attempt=1) for i in range(5))
    records = encode(EventBatch(grain=GrainKey(pipeline_id="p"), changes=changes))
    assert [len(decode(v).changes) for _, v in records] == [2, 2, 1]


@pytest.mark.parametrize("value", [None, b"", b"[]", b'{"v":2}', b'{"v":1,"changes":[[1]]}'])
def test_what_is_not_a_record_of_this_version_is_refused(value: bytes | None) -> None:
    with pytest.raises(BadEvent):
        decode(value)
