"""The garbage collector and a long-running service's startup objects.

CPython's full (oldest-generation) collection visits every tracked object. Once the API
has imported FastAPI, SQLAlchemy, pydantic, the Kubernetes client and our routes, that is
about 130,000 objects that live as long as the process, and one full collection took
77 ms on our 2-core machines: a stall of the event loop, and of every request in it,
that comes more often the more a process allocates (another tenant's flood of batches).
``gc.freeze()`` (Python's documented remedy, made for this) moves the objects alive at
startup to a permanent generation no collection visits again; what the service creates
later is collected as before. Called once by a service's entry point, never by a library
or a test: a frozen object is never freed.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("wsched.heap")


def freeze_startup_heap() -> int:
    """Collect what startup left behind, then freeze the rest; how many were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d startup objects out of the garbage collector's scans", frozen)
    return frozen
