"""A pipeline's live results as Server-Sent Events (D6): status changes and counts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from services.api.auth import CurrentTenant
from services.api.context import Ctx
from services.api.errors import TENANT_ERRORS, ApiError
from services.api.limits import Limits
from services.api.params import AppName, PipelineName
from services.api.routes.pipelines import counts_of
from services.api.routes.tasks import resolve
from services.api.when import parse_duration
from services.live.source import Position
from services.live.sse import StreamOptions, stream

router = APIRouter(
    prefix="/api/applications/{app}/pipelines/{pipeline}", tags=["live"], responses=TENANT_ERRORS
)

#: One event of the stream, as an SSE parser hands it over; ``data`` is JSON text.
_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["counts", "tasks", "gap", "reconnect"]},
        "id": {"type": "string", "pattern": "^[0-9]+:[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
    "required": ["event", "data"],
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An event stream: first `counts` (`{counts}` as last written; not "
        "when resuming), then `tasks` events (`{changes: [{id, status, attempt}], "
        "counts}`) with `<partition>:<offset>` ids; `gap` when events after Last-Event-ID "
        "have expired; `reconnect` when the client fell behind.",
        "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
    }
}


def _duration_s(value: str | None, limits: Limits) -> float:
    if value is None:
        return min(limits.default_stream_s, limits.max_stream_s)
    seconds = parse_duration(value, field="duration").total_seconds()
    if seconds > limits.max_stream_s:
        raise ApiError(
            422,
            "invalid_request",
            f"duration: at most {limits.max_stream_s:g}s; reconnect with Last-Event-ID to go on",
        )
    return seconds


def _last_event_id(value: str | None) -> Position | None:
    if value is None or not value.strip():
        return None
    try:
        return Position.parse(value)
    except ValueError as err:
        raise ApiError(
            400,
            "invalid_last_event_id",
            f"Last-Event-ID: {err}; send the id of the last event received, or none",
        ) from err


@router.get("/events", response_class=StreamingResponse, responses=_STREAM_DOC)
async def pipeline_events(
    app: AppName,
    pipeline: PipelineName,
    tenant: CurrentTenant,
    ctx: Ctx,
    last_event_id: Annotated[
        str | None,
        Header(max_length=64, description="Resume after this event (within an hour)."),
    ] = None,
    duration: Annotated[
        str | None,
        Query(
            max_length=16,
            description="Close the stream after this long (default 5m, at most 1h).",
            examples=["10m"],
        ),
    ] = None,
) -> StreamingResponse:
    """The pipeline's task status changes and counts as they become durable, as
    Server-Sent Events; resumable with ``Last-Event-ID``."""
    options = StreamOptions(duration_s=_duration_s(duration, ctx.limits))
    last = _last_event_id(last_event_id)
    target = await resolve(ctx, tenant.id, app, pipeline)

    async def counts() -> dict[str, int]:
        return counts_of((await ctx.db(ctx.store.stats, [target.id])).get(target.id))

    body = stream(
        hub=ctx.live,
        source=ctx.events,
        pipeline_id=target.id,
        last_event_id=last,
        options=options,
        clock=ctx.clock,
        counts=counts,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
