"""Build a Go command from the Go module proxy through a generated wrapper module.

Several components we test against (tidb-server, kube-apiserver, etcd) cannot be
``go install``-ed directly: their go.mod carries ``replace`` directives, which Go honours
only in the main module. A wrapper module makes the upstream module a dependency, copies
its non-local replace lines, maps its local ones (``=> ./staging/...``) to published
versions, and builds the upstream command with ``go build``. No Go source is kept in our
repository: the wrapper is generated into the cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from services.infra.cache import Cache, ProvisionError
from services.infra.process import run

_REPLACE_BLOCK = re.compile(r"^replace\s*\((.*?)^\)", re.S | re.M)
_REPLACE_LINE = re.compile(r"^replace\s+(.+)$", re.M)
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)", re.M)


@dataclass(frozen=True, kw_only=True)
class GoCommand:
    """A pinned Go command and how to build it."""

    name: str
    module: str
    version: str
    package: str
    #: Version given to every module the upstream go.mod replaces with a local directory;
    #: ``None`` drops those replace lines (the require line's version is used instead).
    local_version: str | None = None
    extra_replaces: tuple[tuple[str, str], ...] = ()
    ldflags: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        spec = json.dumps(
            [
                self.module,
                self.version,
                self.package,
                self.local_version,
                self.extra_replaces,
                self.ldflags,
                sorted(self.env.items()),
            ]
        )
        return hashlib.sha256(spec.encode()).hexdigest()[:12]


def parse_replaces(gomod: str) -> list[tuple[str, str]]:
    """The (left, right) sides of every replace directive in a go.mod text."""
    lines: list[str] = []
    for block in _REPLACE_BLOCK.findall(gomod):
        lines.extend(block.splitlines())
    lines.extend(_REPLACE_LINE.findall(gomod))
    out: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.split("//", 1)[0].strip()
        if "=>" not in line:
            continue
        left, right = (part.strip() for part in line.split("=>", 1))
        if left.startswith("("):
            continue
        out.append((left, right))
    return out


def wrapper_gomod(cmd: GoCommand, upstream_gomod: str) -> str:
    """The go.mod of the wrapper module that builds ``cmd``."""
    match = _GO_DIRECTIVE.search(upstream_gomod)
    go_version = match.group(1) if match else "1.23"
    replaces: list[str] = []
    for left, right in parse_replaces(upstream_gomod):
        old_path = left.split()[0]
        if right.startswith((".", "/")):
            if cmd.local_version is not None:
                replaces.append(f"{old_path} => {old_path} {cmd.local_version}")
        else:
            replaces.append(f"{left} => {right}")
    replaces.extend(f"{old} => {new}" for old, new in cmd.extra_replaces)
    body = "\n".join(f"\t{line}" for line in replaces)
    return f"module wsched.local/build/{cmd.name}\n\ngo {go_version}\n\nreplace (\n{body}\n)\n"


def go_binary() -> str:
    found = shutil.which("go")
    if not found:
        raise ProvisionError(
            "Go is not installed: the test components are built from Go modules. "
            "Install Go 1.24 or newer (https://go.dev/doc/install) and run again."
        )
    return found


def build(cmd: GoCommand, cache: Cache) -> Path:
    """Return the cached binary for ``cmd``, building it first if needed."""
    binary = cache.dir("bin") / f"{cmd.name}-{cmd.fingerprint}"
    if binary.exists():
        return binary
    with cache.locked(cmd.name):
        if binary.exists():
            return binary
        go = go_binary()
        workdir = cache.dir("gobuild", cmd.name)
        info = run(
            [go, "mod", "download", "-json", f"{cmd.module}@{cmd.version}"],
            cwd=workdir,
            what=f"downloading {cmd.module}@{cmd.version}",
        )
        gomod_path = Path(json.loads(info.output)["GoMod"])
        (workdir / "go.mod").write_text(wrapper_gomod(cmd, gomod_path.read_text()))
        (workdir / "go.sum").unlink(missing_ok=True)
        fetched = run(
            [go, "get", "-tool", f"{cmd.package}@{cmd.version}"],
            cwd=workdir,
            what=f"resolving {cmd.package}",
        )
        tmp = binary.with_suffix(".tmp")
        flags = ["-trimpath"] + (["-ldflags", cmd.ldflags] if cmd.ldflags else [])
        built = run(
            [go, "build", *flags, "-o", str(tmp), cmd.package],
            cwd=workdir,
            env=cmd.env,
            what=f"building {cmd.name}",
        )
        tmp.rename(binary)
        cache.record(
            cmd.name,
            version=cmd.version,
            resolve_s=round(info.seconds + fetched.seconds, 1),
            build_s=round(built.seconds, 1),
            peak_rss_mb=round(built.peak_rss_mb),
        )
        return binary
