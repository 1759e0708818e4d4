"""The soak's tenant: its pipelines and schedules, created and read over the HTTP API.

Every call is retried for a bounded time with a log line, because the soak makes calls
right after it has killed things: an API answering 503 while TiDB restarts is expected,
one that never answers is a failure.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("wsched.chaos.tenant")
APP = "chaos"


class SoakFailed(Exception):
    """The soak could not go on; the message says what did not happen."""


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    id: str
    token: str
    path: str


def until(check: Callable[[], bool], *, timeout_s: float, what: str, pause_s: float = 0.5) -> None:
    """Poll ``check`` until it holds; :class:`SoakFailed` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SoakFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(pause_s)


class Tenant:
    def __init__(self, *, api: str, operator_key: str, retry_for_s: float = 120) -> None:
        self.http = httpx.Client(base_url=api, timeout=30)
        self.retry_for_s = retry_for_s
        created = self.call(
            "POST",
            "/api/tenants",
            json={"name": f"chaos-{uuid.uuid4().hex[:8]}"},
            headers={"Authorization": f"Bearer {operator_key}"},
        )
        self.key: str = created["api_key"]
        self.http.headers["Authorization"] = f"Bearer {self.key}"
        self.call("POST", "/api/applications", json={"name": APP})

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a 2xx; 5xx and dropped connections are retried."""
        deadline = time.monotonic() + self.retry_for_s
        while True:
            try:
                answer = self.http.request(method, path, **kwargs)
                if answer.status_code < 500:
                    answer.raise_for_status()
                    return answer.json() if answer.content else None
                problem = f"{answer.status_code} {answer.text[:200]}"
            except httpx.TransportError as err:
                problem = repr(err)
            if time.monotonic() > deadline:
                raise SoakFailed(f"{method} {path} kept failing: {problem}")
            log.warning("%s %s: %s; retrying", method, path, problem)
            time.sleep(1)

    def pipeline(self, name: str) -> Pipeline:
        # Lease expiries after kills are retries, not failures: attempts enough that no task
        # dies of the chaos alone, a lease short enough that a drain does not wait long.
        body = {
            "name": name,
            "chart": "charts/examples/echo",
            "lease_timeout_s": 10,
            "max_attempts": 20,
        }
        created = self.call("POST", f"/api/applications/{APP}/pipelines", json=body)
        path = f"/api/applications/{APP}/pipelines/{name}"
        until(lambda: self.call("GET", path)["state"] == "ready", timeout_s=120, what=name)
        return Pipeline(id=created["id"], token=created["worker_token"], path=path)

    def every_second(self, pipeline: Pipeline, name: str) -> str:
        """A schedule firing every second that catches up every missed fire time (1 h)."""
        body = {"name": name, "every": "1s", "catchup": {"window": "1h", "policy": "all"}}
        return str(self.call("POST", f"{pipeline.path}/schedules", json=body)["id"])

    def pause(self, pipeline: Pipeline, name: str) -> None:
        self.call("POST", f"{pipeline.path}/schedules/{name}:pause")

    def stats(self, pipeline: Pipeline) -> dict[str, int]:
        counts: dict[str, int] = self.call("GET", f"{pipeline.path}/stats")["counts"]
        return counts

    def close(self) -> None:
        self.http.close()
