"""The nesting measure on raw bytes: exact where it matters, never recursive."""

from __future__ import annotations

import json

import pytest

from services.api.json_depth import too_deep


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
        (b"[" * 100_000, 100_000),  # unclosed: what the parser would descend into
        (b'{"a":[{"b":[1]}]}', 4),
        (b"[[1],[[2]],[3]]", 3),
        (b"[]" * 200_000 + b"[[[[]]]]", 4),  # the deepest point comes late
        (b'{"a":"\\\\",' + b'"b":[' * 5 + b"]" * 5 + b"}", 6),  # an escaped backslash
    ],
)
def test_nesting_over_the_limit_is_told_exactly(body: bytes, depth: int) -> None:
    assert too_deep(body, depth - 1)
    assert not too_deep(body, depth)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"' + b"[{" * 100_000 + b'"}',
        b'{"a":"\\"' + b"[" * 1000 + b'"}',  # an escaped quote does not end the string
        b'{"a":"\\u005b' + b"[" * 1000 + b'"}',
        b"",
        b"not json at all",
    ],
)
def test_brackets_in_strings_and_bodies_without_nesting_pass(body: bytes) -> None:
    assert not too_deep(body, 2)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_the_encodings_the_parser_reads_are_measured_as_it_reads_them(encoding: str) -> None:
    # In UTF-16-BE, U+225B is the bytes of '"[' and U+5B5B those of '[['.
    deep = json.dumps({"a": [[[["\u5b5b\u225b" * 40]]]]}, ensure_ascii=False)
    assert too_deep(deep.encode(encoding), 4)
    assert not too_deep(deep.encode(encoding), 5)
