"""The SDK's API reference (docs/sdk-reference.md) is its docstrings: every public class,
method and property has one, and the file is what ``make sdk-reference`` writes now."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

import wsched

REPO = Path(__file__).resolve().parents[3]


def reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdk_reference", REPO / "sdk" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_a_place_in_the_reference() -> None:
    listed = [name for names in reference().SECTIONS.values() for name in names]
    assert sorted(listed) == sorted(set(wsched.__all__) - {"__version__"})


def test_every_public_class_method_and_property_says_what_it_is_for() -> None:
    ref = reference()
    missing = []
    for name in wsched.__all__:
        thing = getattr(wsched, name)
        if not (inspect.isclass(thing) or inspect.isfunction(thing)):
            continue
        if not ref.doc(thing):
            missing.append(name)
        if inspect.isclass(thing):
            for member_name, member in ref.public_members(thing):
                target = member.fget if isinstance(member, property) else member
                if not ref.doc(target):
                    missing.append(f"{name}.{member_name}")
    assert missing == []


def test_the_reference_file_is_up_to_date() -> None:
    """Run ``make sdk-reference`` after changing a public docstring or signature."""
    written = (REPO / "docs" / "sdk-reference.md").read_text()
    assert written == reference().render()
