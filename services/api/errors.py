"""Every error the API answers is JSON ``{"error": <code>, "detail": <what to do>}``.

Handlers are installed for our own :class:`ApiError`, for Starlette's and FastAPI's own
errors (unknown route, wrong method, request validation) and, as a last resort, for any
exception, so that no answer has another shape. That last one answers a generic detail
with an incident id and logs the error under the same id: an exception's text may hold
SQL, parameters or paths, which a tenant must never see.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("wsched.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}
#: Validation errors listed in a detail before "and N more".
_SHOWN_ERRORS = 5


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})


def not_found(detail: str) -> ApiError:
    return ApiError(404, "not_found", detail)


def unavailable(error: str, detail: str, *, retry_after_s: int) -> ApiError:
    return ApiError(503, error, detail, headers={"Retry-After": str(retry_after_s)})


def error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def error_body_schema() -> dict[str, Any]:
    """The OpenAPI schema of an error answer, for route documentation."""
    return {
        "type": "object",
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        "required": ["error", "detail"],
    }


#: What each error status means; the bounds' values are in the API's description.
_MEANINGS = {
    400: "Malformed JSON, a bad cursor, or JSON nested deeper than the limit",
    401: "Missing or unknown API key",
    403: "A key of the wrong kind (the operator key manages tenants, a tenant's key the "
    "rest), or a quota reached (max_pipelines): the detail names it",
    404: "No such application, pipeline or task (another tenant's answer the same)",
    409: "The request conflicts with the current state: a name taken, an application that "
    "still has pipelines, a pipeline not ready, a task already finished or not dead",
    413: "The body, a task's data or the batch is over its size limit",
    422: "The request does not match the schema; the detail names the field",
    429: "Over the tenant's submit_rate or max_backlog quota: retry after Retry-After",
    503: "Kafka or the database cannot be reached: retry after Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each in the error shape.

    A route answers only what it documents (clients and contract tests rely on it). A 422
    given here also replaces FastAPI's default validation-error schema, a list of
    problems, which this API never answers: its handler answers the error shape.
    """
    return {
        status: {
            "description": _MEANINGS[status],
            "content": {"application/json": {"schema": error_body_schema()}},
        }
        for status in statuses
    }


#: The errors of a tenant's routes, and of the operator's (which name no resource).
TENANT_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
OPERATOR_ERRORS = error_responses(400, 401, 403, 409, 413, 422, 503)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    err = cast(ApiError, exc)  # registered for this type only
    return error_response(err.status, err.error, err.detail, err.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    err = cast(StarletteHTTPException, exc)
    detail = err.detail if isinstance(err.detail, str) else str(err.detail)
    if err.status_code == 404 and detail == "Not Found":
        detail = "no such route; the API is described at /docs"
    elif err.status_code == 405:
        detail = "this route does not take that method; the API is described at /docs"
    code = _CODES.get(err.status_code, "error")
    return error_response(err.status_code, code, detail, err.headers)


def _location(loc: Sequence[Any]) -> str:
    parts = [str(part) for part in loc]
    # "body" alone names the whole body; otherwise the field path reads better without it.
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts)


def validation_detail(errors: Sequence[Mapping[str, Any]]) -> str:
    shown = [f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
    more = len(shown) - _SHOWN_ERRORS
    text = "; ".join(shown[:_SHOWN_ERRORS])
    if more > 0:
        text += f"; and {more} more"
    return f"{text}. The request format is described at /docs"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = list(cast(RequestValidationError, exc).errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        where = errors[0].get("ctx", {}).get("error", "")
        return error_response(
            400, "malformed_json", f"the request body is not valid JSON ({where}); fix and resend"
        )
    detail = validation_detail(errors)
    content_type = request.headers.get("content-type", "")
    if request.method in ("POST", "PATCH") and "json" not in content_type:
        detail += "; send the body as JSON with Content-Type: application/json"
    return error_response(422, "invalid_request", detail)


def new_incident() -> str:
    """An id that ties an answer to its log line (random: it reveals nothing)."""
    return secrets.token_hex(8)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    incident = new_incident()
    log.error(
        "unexpected error on %s %s (incident %s)",
        request.method,
        request.url.path,
        incident,
        exc_info=exc,
    )
    return error_response(
        500,
        "internal",
        f"the server failed unexpectedly; it is logged as incident {incident}: "
        "please report that id",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
