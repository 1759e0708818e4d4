"""helm's failures, sorted: a definite one is the pipeline's reason (DeployFailed), one
worth another attempt (the cluster unreachable, another operation under way) is
:class:`HelmUnavailable`; a refusal of our post-renderer is shown without helm's wrapping
(which names the interpreter's path)."""

from __future__ import annotations

from pyhelm3 import errors as helm_errors

from services.deploy import postrender
from services.deploy.helm._dependencies import MAX_MESSAGE
from services.deploy.ports import DeployFailed

#: Helm's refusal while a release is pending (another operation, or a dead helm's).
IN_PROGRESS = "another operation (install/upgrade/rollback) is in progress"


class HelmUnavailable(Exception):
    """Helm or the Kubernetes API cannot be reached right now: worth another attempt."""


def classified(err: helm_errors.Error, what: str) -> Exception:
    """Helm's own words: a definite failure (bad chart, refused values) is DeployFailed,
    shown as the pipeline's reason; an unreachable cluster is worth retrying."""
    message = (err.stderr or err.stdout).decode(errors="replace").strip()
    message = message.removeprefix("Error: ").strip() or f"exit {err.returncode}"
    refused = [
        line.split(postrender.PREFIX, 1)[1].strip()
        for line in message.splitlines()
        if postrender.PREFIX in line
    ]
    if refused:
        message = "the chart renders what a pipeline may not create: " + "; ".join(refused)
    text = f"{what}: {message}"[:MAX_MESSAGE]
    transient = helm_errors.ConnectionError | helm_errors.CommandCancelledError
    if isinstance(err, transient) or IN_PROGRESS in str(err):
        return HelmUnavailable(text)
    return DeployFailed(text)
