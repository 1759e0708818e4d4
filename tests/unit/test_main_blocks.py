"""A module run with ``python -m`` defines everything before its ``__main__`` block.

The block runs while the module is still being executed: a function defined below it
does not exist yet. ``services/worker/agent.py`` had ``_fire_at`` below its block, so
every agent started as ``python -m services.worker.agent`` (as the tests and the local
deployer's processes start it) died with a NameError on its first task.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    path
    for folder in ("services", "actors")
    for path in (ROOT / folder).rglob("*.py")
    if 'if __name__ == "__main__"' in path.read_text()
)


def _is_main_block(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_main_block_comes_last(path: Path) -> None:
    body = ast.parse(path.read_text()).body
    blocks = [i for i, node in enumerate(body) if _is_main_block(node)]

    assert blocks == [len(body) - 1], f"{path.name}: statements after the __main__ block"
