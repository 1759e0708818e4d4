"""How deeply a JSON body nests, measured on its raw bytes before anything parses it.

Python's JSON parser (and pydantic after it) recurses once per nested array or object: a
body of 100,000 ``[`` exhausts the interpreter's stack, a RecursionError that answers 500.
This measure never recurses and runs at C speed: it keeps the brackets, drops everything
else, and follows the depth from one bracket to the next.
"""

from __future__ import annotations

import itertools
import json
import re

#: A JSON string with its escapes: brackets inside strings are text, not structure.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OTHER_BYTES = bytes(b for b in range(256) if b not in b"[]{}")
#: Opening brackets become +1 and closing ones -1 (0xff read as a signed byte).
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
#: Brackets measured at a time.
_CHUNK = 64 * 1024


def too_deep(body: bytes, limit: int) -> bool:
    """Whether ``body`` nests arrays and objects more than ``limit`` levels deep
    (``{"a": [1]}`` is 2 deep).

    Measured first with strings left in, which is cheap and can only overstate the depth;
    only a body that seems too deep pays for cutting its strings out (a bracket in a
    string is text). Malformed JSON is measured all the same: what the parser would
    descend into before it finds the fault counts, and the parser says what is wrong.
    """
    text = _utf8(body)
    return _deeper_than(text, limit) and _deeper_than(_STRING.sub(b"", text), limit)


def _deeper_than(text: bytes, limit: int) -> bool:
    """Whether the brackets in ``text`` nest deeper than ``limit``; a chunk at a time, to
    stop at the first chunk that goes over."""
    steps = memoryview(text.translate(_STEPS, _OTHER_BYTES)).cast("b")
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        chunk = steps[start : start + _CHUNK]
        if max(itertools.accumulate(chunk, initial=depth)) > limit:
            return True
        depth += sum(chunk)
    return False


def _utf8(body: bytes) -> bytes:
    """``body`` as the parser will read it: it also takes UTF-16 and UTF-32, where bytes
    of other characters could pass for quotes or brackets."""
    encoding = json.detect_encoding(body)
    if encoding == "utf-8":
        return body
    try:
        return body.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    except UnicodeError:
        return b""  # the parser fails on decoding, before it nests anything
