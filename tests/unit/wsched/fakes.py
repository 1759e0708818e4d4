"""An API in memory for the SDK's unit tests: scripted answers over httpx.MockTransport,
every request kept, and a clock that moves only when the client sleeps."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON answer (none for 204)."""
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def error(status: int, code: str, detail: str, retry_after: str | None = None) -> httpx.Response:
    """An error in the API's shape."""
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return answer(status, {"error": code, "detail": detail}, headers)


@dataclass
class FakeApi:
    """Answers requests in order from ``script``; an answer may be a function of the request."""

    script: deque[Answer] = field(default_factory=deque)
    requests: list[httpx.Request] = field(default_factory=list)

    def then(self, *answers: Answer) -> FakeApi:
        self.script.extend(answers)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.script, f"no answer scripted for {request.method} {request.url}"
        next_answer = self.script.popleft()
        return next_answer(request) if callable(next_answer) else next_answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


@dataclass
class Clock:
    """Monotonic time that advances by what the client sleeps."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def task_json(task_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """A task as ``GET .../tasks/{id}`` answers it."""
    return {
        "id": task_id,
        "status": status,
        "attempt": 1,
        "error": None,
        "created_at": "2026-11-26T12:00:00Z",
        "due_at": "2026-11-26T12:00:00Z",
        "expires_at": None,
        "started_at": None,
        "finished_at": None,
        "worker": None,
        "data": {"n": 1},
        "result": None,
        "result_encoding": None,
        **extra,
    }


def batch_answer(request: httpx.Request) -> httpx.Response:
    """``POST .../tasks``: every item queued, in order."""
    items: Iterable[dict[str, Any]] = json.loads(request.content)["tasks"]
    results = [{"id": i["id"], "result": "queued", "status": "queued"} for i in items]
    return answer(202, {"results": results, "queued": len(results), "existing": 0, "conflicts": 0})


def schedule_json(name: str = "nightly", **extra: Any) -> dict[str, Any]:
    """A schedule as ``GET .../schedules/{name}`` answers it."""
    return {
        "id": "0196aaaa",
        "name": name,
        "cron": "0 2 * * *",
        "every": None,
        "timezone": "Europe/Paris",
        "start_at": None,
        "end_at": None,
        "jitter": None,
        "data": {"report": "daily"},
        "max_runs": None,
        "overlap": "allow",
        "catchup": {"window_s": 3600.0, "policy": "latest", "after_pause": False},
        "paused": False,
        "version": 1,
        "created_at": "2026-11-26T12:00:00+00:00",
        "updated_at": "2026-11-26T12:00:00+00:00",
        "next_fire_times": ["2026-11-27T01:00:00Z", "2026-11-28T01:00:00Z"],
        "last_runs": [
            {"fire_at": "2026-11-26T01:00:00Z", "task_id": "0196aaaa@2026-11-26T01:00:00Z",
             "status": "succeeded"},
        ],
        "counts": {"fired": 1, "skipped": 0, "missed": 0},
        **extra,
    }  # fmt: skip
