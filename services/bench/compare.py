"""``wsched bench-compare``: this checkout against an earlier commit, interleaved.

Our machines vary from day to day by more than most changes gain or lose (one commit
measured 2,153 and 1,368 tasks/s on two days, the TiDB floor halving too), so a figure
means something only beside another measured in the same hour on the same machine. This
runs ``wsched bench --json`` of a base commit and of this checkout in turn, ``runs``
times each, in ABBA order (base first on even rounds, this checkout first on odd ones)
so a drift of the machine during the session does not favour either, and prints each
figure's median side by side with the ratio.

The base commit is checked out (``git worktree``) and installed into a virtualenv of its
own under the cache, once per commit; the raw reports are kept next to the summary.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from services.bench.report import FIGURES, machine

Report = dict[str, Any]
Say = Callable[[str], None]


class CompareFailed(Exception):
    """A step of the comparison failed; the message says which and how to look further."""


@dataclass(frozen=True, kw_only=True)
class Side:
    """One system under comparison: a label, the ``wsched`` it runs and the checkout it
    runs in (the processes it starts run ``python -m services...`` from there: run from
    another checkout they would import that checkout's code)."""

    label: str
    command: tuple[str, ...]
    commit: str
    cwd: Path | None = None


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CompareFailed(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def prepare_base(*, repo: Path, rev: str, root: Path, say: Say) -> Side:
    """Check out ``rev`` under ``root`` and install it into its own virtualenv (cached)."""
    commit = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
    tree = root / commit[:12]
    wsched = tree / ".venv" / "bin" / "wsched"
    if not wsched.exists():
        say(f"installing base {commit[:12]} (once per commit)")
        if not tree.exists():
            root.mkdir(parents=True, exist_ok=True)
            _git(repo, "worktree", "add", "--detach", str(tree), commit)
        for step in (
            [sys.executable, "-m", "venv", str(tree / ".venv")],
            [str(tree / ".venv" / "bin" / "pip"), "install", "-q", *_editables(tree)],
        ):
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise CompareFailed(f"installing the base failed: {done.stderr.strip()[-2000:]}")
    return Side(label=f"base {commit[:12]}", command=(str(wsched),), commit=commit, cwd=tree)


def _editables(tree: Path) -> list[str]:
    """``-e`` for the checkout, after its SDK (sdk/) where it has one: the server depends
    on the SDK of its own version, which must come from the same tree, not an index."""
    sdk = tree / "sdk"
    first = ["-e", str(sdk)] if (sdk / "pyproject.toml").exists() else []
    return [*first, "-e", str(tree)]


def head_side(repo: Path) -> Side:
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    label = f"this {commit[:12]}{' + changes' if dirty else ''}"
    # The wsched of the running interpreter's environment: this checkout's install.
    wsched = Path(sys.executable).parent / "wsched"
    return Side(label=label, command=(str(wsched),), commit=commit, cwd=repo)


def parse_report(stdout: str) -> Report:
    """The JSON object ``wsched bench --json`` prints last, after its progress lines."""
    start = stdout.rfind("\n{\n")
    start = 0 if stdout.startswith("{\n") and start < 0 else start
    if start < 0:
        raise CompareFailed("the bench printed no JSON report")
    report: Report = json.loads(stdout[start:])
    return report


def run_once(side: Side, *, bench_args: Sequence[str], log: Path) -> Report:
    done = subprocess.run(
        [*side.command, "bench", "--json", *bench_args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
        cwd=side.cwd,
    )
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        raise CompareFailed(f"{side.label}: the bench failed (exit {done.returncode}); see {log}")
    return parse_report(done.stdout)


def order(round_no: int, base: Side, head: Side) -> tuple[Side, Side]:
    """ABBA: base first on even rounds, this checkout first on odd ones."""
    return (base, head) if round_no % 2 == 0 else (head, base)


def compare(
    *, base: Side, head: Side, runs: int, bench_args: Sequence[str], out: Path, say: Say
) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, list[Report]] = {base.label: [], head.label: []}
    for round_no in range(runs):
        for side in order(round_no, base, head):
            say(f"round {round_no + 1}/{runs}: {side.label}")
            log = out / f"round{round_no + 1}-{side.commit[:12]}-{len(reports[side.label])}.log"
            reports[side.label].append(run_once(side, bench_args=bench_args, log=log))
    summary = summarise(base=base, head=head, reports=reports, bench_args=bench_args)
    (out / "summary.json").write_text(json.dumps({**summary, "reports": reports}, indent=2))
    return summary


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def summarise(
    *, base: Side, head: Side, reports: dict[str, list[Report]], bench_args: Sequence[str]
) -> Report:
    figures: dict[str, Any] = {}
    for key, label in FIGURES:
        sides = {
            side.label: [r[key] for r in reports[side.label] if r.get(key) is not None]
            for side in (base, head)
        }
        base_m, head_m = _median(sides[base.label]), _median(sides[head.label])
        figures[key] = {
            "label": label,
            "base_runs": sides[base.label],
            "head_runs": sides[head.label],
            "base_median": base_m,
            "head_median": head_m,
            "ratio": round(head_m / base_m, 3) if base_m and head_m is not None else None,
        }
    return {
        "base": base.label,
        "head": head.label,
        "runs_each": len(reports[base.label]),
        "bench_args": list(bench_args),
        "machine": machine(),
        "figures": figures,
    }


def render(summary: Report) -> Table:
    table = Table(
        "figure",
        f"{summary['base']} (runs)",
        f"{summary['head']} (runs)",
        "median: base → this",
        "this / base",
        title=f"wsched bench-compare, {summary['runs_each']} runs each, interleaved (ABBA)",
    )
    for figure in summary["figures"].values():
        if figure["base_median"] is None and figure["head_median"] is None:
            continue
        table.add_row(
            figure["label"],
            ", ".join(f"{v:,}" for v in figure["base_runs"]),
            ", ".join(f"{v:,}" for v in figure["head_runs"]),
            f"{figure['base_median']} → {figure['head_median']}",
            "-" if figure["ratio"] is None else f"{figure['ratio']:.3f}",
        )
    for key, value in summary["machine"].items():
        table.add_row(f"machine: {key}", str(value), "", "", "")
    return table
