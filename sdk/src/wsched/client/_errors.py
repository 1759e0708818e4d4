"""What the SDK raises: one base class, one subclass per kind of API answer.

Every error the API answers has the shape ``{"error": <code>, "detail": <what to do>}``;
:class:`ApiError` keeps both, so a caller can branch on the stable ``error`` code
(``pipeline_not_ready``, ``task_conflict``, ...) and show the ``detail`` to a person.
The subclass follows the HTTP status, so ``except NotFound`` reads as it should.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from wsched.client._models import Task


class WschedError(Exception):
    """The base of every error this SDK raises."""


class ConnectionFailed(WschedError):
    """The API could not be reached, or the connection broke before an answer came.

    The request may or may not have taken effect; submits carry task ids, so sending
    them again is safe.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the API at {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(WschedError):
    """The API answered an error: ``status``, its ``error`` code and ``detail``."""

    def __init__(
        self, *, status: int, error: str, detail: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {detail}" if error else f"{status}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        #: Seconds the API asked the client to wait before retrying (503 and 429 only).
        self.retry_after_s = retry_after_s


class BadRequest(ApiError):
    """400: malformed JSON, a bad cursor, JSON nested too deep."""


class Unauthorized(ApiError):
    """401: no API key, or one the API does not know."""


class Forbidden(ApiError):
    """403: a key of the wrong kind (the operator's key manages tenants, a tenant's the rest)."""


class NotFound(ApiError):
    """404: no such application, pipeline or task (or not yours)."""


class Conflict(ApiError):
    """409: a name taken, a pipeline not ready, a task id reused with other data, ..."""


class PayloadTooLarge(ApiError):
    """413: the body, a task's data or a batch is over the API's limit."""


class InvalidRequest(ApiError):
    """422: the request does not match the schema; ``detail`` names the field."""


class RateLimited(ApiError):
    """429: too many requests; retried by the client up to its bound, then raised."""


class Unavailable(ApiError):
    """503: Kafka or the database is unreachable; retried up to the bound, then raised."""


class ServerError(ApiError):
    """Another 5xx: the API failed; its detail carries an incident id to report."""


class TaskTimeout(WschedError, TimeoutError):
    """A task did not finish within the time a caller was willing to wait.

    The task goes on; wait again, or cancel it.
    """

    def __init__(self, task_id: str, timeout_s: float, status: str | None) -> None:
        seen = f" (last seen {status})" if status else " (not admitted yet)"
        super().__init__(f"task {task_id!r} did not finish within {timeout_s:g} s{seen}")
        self.task_id = task_id
        self.status = status


class TaskFailed(WschedError):
    """A task ended without succeeding (failed, dead, cancelled or expired).

    ``task`` holds its final state: status, error and, with ``attempts``, each attempt.
    """

    def __init__(self, task: Task) -> None:
        because = f": {task.error}" if task.error else ""
        super().__init__(f"task {task.id!r} ended {task.status}{because}")
        self.task = task


class PipelineFailed(WschedError):
    """A pipeline being provisioned ended ``failed``; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"pipeline {name} failed: {reason}")
        self.name = name
        self.reason = reason


class PipelineTimeout(WschedError, TimeoutError):
    """A pipeline was not ready within the time a caller was willing to wait."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(f"pipeline {name} was not ready within {timeout_s:.0f}s")
        self.name = name


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def error_from(response: httpx.Response, *, retry_after_s: float | None = None) -> ApiError:
    """The exception for an error answer; one not in the API's shape keeps its text."""
    status = response.status_code
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    try:
        body: Any = json.loads(response.content)
        error, detail = str(body["error"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        # A proxy's page or a load balancer's text: not ours, but worth showing.
        error, detail = "", response.text[:500]
    return kind(status=status, error=error, detail=detail, retry_after_s=retry_after_s)
