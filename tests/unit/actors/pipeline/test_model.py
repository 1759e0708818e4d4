"""The grain's value types: the key's stored text must stay byte for byte what rows hold."""

from __future__ import annotations

import pytest

from actors.pipeline.model import GrainKey, InvalidGrainKey


def test_a_key_prints_as_the_text_grain_rows_are_stored_under() -> None:
    assert str(GrainKey(pipeline_id="0190-abc")) == "0190-abc/0"
    assert str(GrainKey(pipeline_id="0190-abc", slice=12)) == "0190-abc/12"


def test_parse_undoes_str() -> None:
    key = GrainKey(pipeline_id="0190-abc", slice=3)
    assert GrainKey.parse(str(key)) == key
    assert GrainKey.parse("p/0") == GrainKey(pipeline_id="p")


@pytest.mark.parametrize(
    "text", ["", "p", "p/", "/0", "p/-1", "p/01", "p/+1", "p/1.0", "p/x", "p/²", "a/b/0", "p/0 "]
)
def test_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(InvalidGrainKey):
        GrainKey.parse(text)


def test_a_key_names_a_pipeline_without_a_slash_and_no_negative_slice() -> None:
    with pytest.raises(InvalidGrainKey):
        GrainKey(pipeline_id="")
    with pytest.raises(InvalidGrainKey):
        GrainKey(pipeline_id="a/b")
    with pytest.raises(InvalidGrainKey):
        GrainKey(pipeline_id="p", slice=-1)


def test_keys_order_by_pipeline_then_slice() -> None:
    keys = [
        GrainKey(pipeline_id="b"),
        GrainKey(pipeline_id="a", slice=2),
        GrainKey(pipeline_id="a"),
    ]
    assert sorted(keys) == [
        GrainKey(pipeline_id="a"),
        GrainKey(pipeline_id="a", slice=2),
        GrainKey(pipeline_id="b"),
    ]
