"""The layers hold: the domain (``actors/``) imports no adapter, and the lowest service
layers (provisioning in ``services/infra/``, the SQL store in ``services/store/``) import
nothing above them.

Imports are read with ``ast``, never executed, so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top of a module. Each rule lists what a
layer may import today and nothing more: a new dependency is a decision, made here.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Our own top-level packages; every other import is the standard library or a dependency.
FIRST_PARTY = frozenset({"actors", "protos", "services", "tests", "wsched"})
#: Dependencies the domain may use: pure computation, no I/O, no framework (cron
#: evaluation, ``actors/pipeline/recurrence.py``).
PURE = frozenset({"cronsim"})


@dataclass(frozen=True)
class Import:
    path: str
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.module}"


def within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def imports_under(folder: str) -> list[Import]:
    """Every import of every module below ``folder`` (relative to the repository)."""
    found = [
        found
        for path in sorted((REPO / folder).rglob("*.py"))
        for found in _imports_of(path.relative_to(REPO))
    ]
    assert found, f"no imports found below {folder}: has it moved?"
    return found


def _imports_of(path: Path) -> Iterator[Import]:
    tree = ast.parse((REPO / path).read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(str(path), node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            # ``from services import bench`` imports services.bench, not just services.
            module = _absolute(path, node)
            for alias in node.names:
                yield Import(str(path), node.lineno, f"{module}.{alias.name}")


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """``from .x import y`` in ``a/b/c.py`` is ``a.b.x`` (a package's ``__init__`` too)."""
    if not node.level:
        return node.module or ""
    package = list(path.with_suffix("").parts[:-1])
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def violations(folder: str, *, ours: tuple[str, ...], dependencies: bool = True) -> list[str]:
    """The imports below ``folder`` of our code outside ``ours`` and, without
    ``dependencies``, of anything but the standard library and the ``PURE`` ones."""

    def allowed(module: str) -> bool:
        root = module.split(".")[0]
        if root in FIRST_PARTY:
            return within(module, *ours)
        standard = root == "__future__" or root in sys.stdlib_module_names
        return dependencies or standard or root in PURE

    return [str(found) for found in imports_under(folder) if not allowed(found.module)]


def test_the_domain_imports_only_the_standard_library_and_itself() -> None:
    """So no services, protobuf, aiokafka, grpc, FastAPI, SQLAlchemy, kubernetes or
    pyhelm3: the actors talk to ports that services/ implements (a pure library such as
    the cron evaluator is fine)."""
    assert violations("actors", ours=("actors",), dependencies=False) == []


def test_provisioning_imports_nothing_of_ours_above_it() -> None:
    """services/infra/ provisions and runs the real components for everything else
    (benchmarks, dev stack, tests), so it may use third-party libraries but of our code
    only itself."""
    assert violations("services/infra", ours=("services.infra",)) == []


def test_the_store_imports_only_the_domain_placement_and_quotas() -> None:
    """services/store/ implements the domain's store ports, uses the shard placement to
    file pipelines and the quotas' bucket arithmetic to keep tenants' shared submit
    buckets; the API, scheduler, workers, deployers, benchmarks, Kafka clients and
    settings are all above it."""
    ours = ("services.store", "services.placement", "services.quotas", "actors")
    assert violations("services/store", ours=ours) == []


def test_the_quotas_import_only_the_standard_library_and_themselves() -> None:
    """services/quotas/ is pure (values, bucket arithmetic, the limiter over a port), so
    that the store below the API can share it."""
    assert violations("services/quotas", ours=("services.quotas",), dependencies=False) == []


def test_the_sdk_imports_only_itself_the_standard_library_and_httpx() -> None:
    """The ``wsched`` wheel (sdk/) holds the SDK alone and depends on httpx alone: an
    import of the server's packages would fail on a user's machine, another library
    would be a dependency the SDK's pyproject does not declare."""
    found = imports_under("sdk/src/wsched")
    allowed = {"__future__", "httpx", "wsched"}
    assert [
        str(i) for i in found if i.module.split(".")[0] not in allowed | sys.stdlib_module_names
    ] == []


def test_relative_imports_are_resolved_against_their_package() -> None:
    node = ast.parse("from ..deploy import helm").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _absolute(Path("services/store/control.py"), node) == "services.deploy"
    init = ast.parse("from . import records").body[0]
    assert isinstance(init, ast.ImportFrom)
    assert _absolute(Path("services/store/__init__.py"), init) == "services.store"
