"""Messages for tenants: no path or address of the API's machine in them.

Helm's and the Kubernetes client's errors name files (the prepared chart copy, the
kubeconfig, the post-renderer's interpreter) and addresses (the API server's). A
pipeline's reason is shown to its tenant, so every message the deployer raises passes
through :func:`scrubbed` first: known directories become what the tenant knows them by,
any other absolute path ``<path>`` and any IP address ``<address>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

#: An absolute path standing on its own: not the path part of a URL (``host/x``, ``://``).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~>-])/[^\s'\"`:,;()\[\]{}<>]+")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*\](?::\d+)?")


def scrubbed(
    message: str, *, known: Iterable[tuple[Path, str]] = (), keep: Iterable[str] = ()
) -> str:
    """``message`` with the API machine's paths and addresses taken out. ``known`` maps
    directories to the names shown instead (longest first, so nested ones win); ``keep``
    are the tenant's own words (the chart as given), left as they are."""
    kept = [text for text in keep if text]
    for index, text in enumerate(kept):
        message = message.replace(text, f"\x00{index}\x00")
    for path, label in sorted(known, key=lambda pair: len(str(pair[0])), reverse=True):
        if str(path) not in ("", "/", "."):
            message = message.replace(str(path), label)
    message = _ABSOLUTE_PATH.sub("<path>", message)
    for index, text in enumerate(kept):
        message = message.replace(f"\x00{index}\x00", text)
    # Addresses go even from the tenant's words: a chart named like one cannot shield them.
    message = _IPV6.sub("<address>", message)
    return _IPV4.sub("<address>", message)
