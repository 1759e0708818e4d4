"""Workload Scheduler's Python SDK.

``from wsched import Client`` (or ``AsyncClient``) is all most programs need; everything
public is re-exported here from :mod:`wsched.client`. The server (API, scheduler,
deployers) is not part of this package: it is the ``workload-scheduler`` distribution,
installed with ``pip install 'wsched[server]'``.
"""

from __future__ import annotations

from wsched._version import __version__
from wsched.client import *  # noqa: F403 - the SDK's public names, listed there
from wsched.client import __all__ as _client_names

__all__ = ["__version__", *_client_names]
