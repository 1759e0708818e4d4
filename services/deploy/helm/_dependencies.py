"""Local chart directories with ``file://`` dependencies, built into private copies.

Helm refuses a chart whose dependencies are missing from ``charts/``, and a chart such as
``charts/examples/echo`` names pipeline-lib by a relative ``file://`` path. The copy points
those at the originals and ``helm dependency build`` fills its ``charts/``; the repository's
own directories are never written to.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from services.deploy.helm._sources import ChartSource
from services.deploy.ports import DeployFailed

#: Helm's message is the pipeline's reason; the API shows at most this much of it.
MAX_MESSAGE = 2000


class DependencyBuilder:
    """Prepares local chart directories for helm, one build per chart content."""

    def __init__(self, *, executable: str, work_dir: Path) -> None:
        """``work_dir`` holds the built copies; ``executable`` is helm."""
        self._executable = executable
        self._work_dir = work_dir
        self._prepared: dict[str, Path] = {}
        self._building: dict[str, asyncio.Lock] = {}

    async def prepared(self, source: ChartSource) -> ChartSource:
        """A local directory with its content digest, its ``file://`` dependencies built
        into a private copy when it has any."""
        directory = Path(source.ref)
        digest = await asyncio.to_thread(_tree_digest, directory)
        if not await asyncio.to_thread(_local_dependencies, directory):
            return ChartSource(ref=source.ref, version=source.version, digest=digest)
        # One build per chart content, however many pipelines deploy it at once.
        async with self._building.setdefault(digest, asyncio.Lock()):
            prepared = self._prepared.get(digest)
            if prepared is None or not await asyncio.to_thread(prepared.is_dir):
                prepared = await self._build(directory, digest)
                self._prepared[digest] = prepared
        return ChartSource(ref=str(prepared), version=source.version, digest=digest)

    async def _build(self, directory: Path, digest: str) -> Path:
        target = self._work_dir / "charts" / digest[:16] / directory.name
        if await asyncio.to_thread((target / ".wsched-built").is_file):
            return target
        await asyncio.to_thread(self._work_dir.mkdir, parents=True, exist_ok=True)
        staging = Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix="chart-", dir=self._work_dir)
        )
        copy = staging / directory.name
        await asyncio.to_thread(_copy_with_absolute_dependencies, directory, copy)
        process = await asyncio.create_subprocess_exec(
            self._executable,
            "dependency",
            "build",
            str(copy),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
            message = (err or out).decode(errors="replace").strip()
            raise DeployFailed(f"helm dependency build {directory.name}: {message}"[:MAX_MESSAGE])
        await asyncio.to_thread(_install_built, copy, target)
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        return target


def _install_built(copy: Path, target: Path) -> None:
    (copy / ".wsched-built").touch()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    copy.rename(target)


def _local_dependencies(directory: Path) -> list[dict[str, Any]]:
    try:
        meta = yaml.safe_load((directory / "Chart.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DeployFailed(f"cannot read the Chart.yaml of chart {directory.name}") from err
    dependencies = meta.get("dependencies") or [] if isinstance(meta, dict) else []
    return [d for d in dependencies if isinstance(d, dict)]


def _tree_digest(directory: Path) -> str:
    """The chart's files and, recursively, those of its ``file://`` dependencies."""
    digest = hashlib.sha256()
    seen: set[Path] = set()

    def add(root: Path) -> None:
        root = root.resolve()
        if root in seen:
            return
        seen.add(root)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
        for dependency in _local_dependencies(root):
            repository = str(dependency.get("repository", ""))
            if repository.startswith("file://"):
                add(root / repository.removeprefix("file://"))

    add(directory)
    return digest.hexdigest()


def _copy_with_absolute_dependencies(source: Path, target: Path) -> None:
    """Copy a chart, pointing its relative ``file://`` dependencies at the originals."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = target / "Chart.yaml"
    meta = yaml.safe_load(chart_yaml.read_text())
    for dependency in meta.get("dependencies") or []:
        repository = str(dependency.get("repository", ""))
        if repository.startswith("file://"):
            location = Path(repository.removeprefix("file://"))
            if not location.is_absolute():
                location = (source / location).resolve()
            dependency["repository"] = f"file://{location}"
    chart_yaml.write_text(yaml.safe_dump(meta, sort_keys=False))
    # A chart's own vendored dependencies (charts/*.tgz) come along.
    vendored = source / "charts"
    if vendored.is_dir():
        shutil.copytree(vendored, target / "charts")
