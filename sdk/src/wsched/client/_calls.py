"""Every API operation as a value: method, path, body, how to read the answer.

Both clients send these (``Client`` blocking, ``AsyncClient`` awaiting), so each
operation is written once and the two cannot drift apart; the unit tests read them
without any network. The tasks' calls are in ``_task_calls``, the schedules' in
``_schedule_calls``; a sub-client is thin methods on both clients that send them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from wsched.client._errors import WschedError
from wsched.client._models import (
    Application,
    Pipeline,
    PipelineCreated,
    PipelineDeleting,
    Rotated,
    Stats,
    Tenant,
    TenantCreated,
    TenantQuotas,
    TenantStatus,
)
from wsched.client._options import dumps

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, kw_only=True)
class Call(Generic[T_co]):
    """One request and how to read its answer (an error answer is raised, not read)."""

    method: str
    path: str
    read: Callable[[httpx.Response], T_co]
    params: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    #: Safe to send again after a 503 or 429 (reads; submits with fixed ids).
    retryable: bool = False


def body_of(response: httpx.Response) -> Any:
    """The answer's JSON; an answer that is not JSON is the API's fault, said so."""
    try:
        return json.loads(response.content)
    except ValueError as err:
        raise WschedError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with a body that is not JSON: {response.text[:200]!r}"
        ) from err


def _reader(parse: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    return lambda response: parse(body_of(response))


def _nothing(_: httpx.Response) -> None:
    return None


def seg(value: str) -> str:
    """One path segment, escaped: names and ids are checked by the API, not here."""
    return quote(value, safe="")


def app_path(app: str) -> str:
    return f"/api/applications/{seg(app)}"


def pipeline_path(app: str, pipeline: str) -> str:
    return f"{app_path(app)}/pipelines/{seg(pipeline)}"


# -- tenants (operator key) and applications ----------------------------------------------


def create_tenant(name: str) -> Call[TenantCreated]:
    return Call(
        method="POST",
        path="/api/tenants",
        body=dumps({"name": name}),
        read=_reader(TenantCreated.from_json),
    )


def list_tenants() -> Call[list[Tenant]]:
    return Call(
        method="GET",
        path="/api/tenants",
        retryable=True,
        read=_reader(lambda body: [Tenant.from_json(t) for t in body["tenants"]]),
    )


def tenant_path(name: str) -> str:
    return f"/api/tenants/{seg(name)}"


def get_tenant(name: str) -> Call[TenantQuotas]:
    return Call(
        method="GET", path=tenant_path(name), retryable=True, read=_reader(TenantQuotas.from_json)
    )


def set_tenant_quotas(name: str, quotas: Mapping[str, float | None]) -> Call[TenantQuotas]:
    return Call(
        method="PATCH",
        path=tenant_path(name),
        body=dumps({"quotas": dict(quotas)}),
        read=_reader(TenantQuotas.from_json),
    )


def own_tenant() -> Call[TenantQuotas]:
    return Call(
        method="GET", path="/api/tenant", retryable=True, read=_reader(TenantQuotas.from_json)
    )


def rotate_key(name: str, grace_s: int) -> Call[Rotated]:
    return _rotate(f"{tenant_path(name)}/rotate-key", grace_s, field_name="api_key")


def revoke_key(name: str) -> Call[None]:
    return Call(method="POST", path=f"{tenant_path(name)}/revoke-key", read=_nothing)


def delete_tenant(name: str) -> Call[TenantStatus]:
    # Repeating it is harmless (the deletion under way is answered), so it is retried.
    return Call(
        method="DELETE",
        path=tenant_path(name),
        retryable=True,
        read=_reader(TenantStatus.from_json),
    )


def rotate_token(app: str, pipeline: str, grace_s: int) -> Call[Rotated]:
    return _rotate(
        f"{pipeline_path(app, pipeline)}/rotate-token", grace_s, field_name="worker_token"
    )


def _rotate(path: str, grace_s: int, *, field_name: str) -> Call[Rotated]:
    """A rotation; ``field_name``: the answer's field holding the new secret."""
    return Call(
        method="POST",
        path=path,
        body=dumps({"grace_s": grace_s}),
        read=_reader(lambda body: Rotated.from_json(body, field_name=field_name)),
    )


def create_application(name: str) -> Call[Application]:
    return Call(
        method="POST",
        path="/api/applications",
        body=dumps({"name": name}),
        read=_reader(Application.from_json),
    )


def list_applications() -> Call[list[Application]]:
    return Call(
        method="GET",
        path="/api/applications",
        retryable=True,
        read=_reader(lambda body: [Application.from_json(a) for a in body["applications"]]),
    )


def get_application(name: str) -> Call[Application]:
    return Call(
        method="GET", path=app_path(name), retryable=True, read=_reader(Application.from_json)
    )


def delete_application(name: str) -> Call[None]:
    return Call(method="DELETE", path=app_path(name), read=_nothing)


# -- pipelines ----------------------------------------------------------------------------


def create_pipeline(app: str, spec: Mapping[str, Any]) -> Call[PipelineCreated]:
    return Call(
        method="POST",
        path=f"{app_path(app)}/pipelines",
        body=dumps(dict(spec)),
        read=_reader(PipelineCreated.from_json),
    )


def list_pipelines(app: str) -> Call[list[Pipeline]]:
    return Call(
        method="GET",
        path=f"{app_path(app)}/pipelines",
        retryable=True,
        read=_reader(lambda body: [Pipeline.from_json(p) for p in body["pipelines"]]),
    )


def get_pipeline(app: str, name: str) -> Call[Pipeline]:
    return Call(
        method="GET",
        path=pipeline_path(app, name),
        retryable=True,
        read=_reader(Pipeline.from_json),
    )


def update_pipeline(app: str, name: str, changes: Mapping[str, Any]) -> Call[Pipeline]:
    return Call(
        method="PATCH",
        path=pipeline_path(app, name),
        body=dumps(dict(changes)),
        read=_reader(Pipeline.from_json),
    )


def delete_pipeline(app: str, name: str) -> Call[PipelineDeleting]:
    return Call(
        method="DELETE", path=pipeline_path(app, name), read=_reader(PipelineDeleting.from_json)
    )


def stats(app: str, pipeline: str) -> Call[Stats]:
    return Call(
        method="GET",
        path=f"{pipeline_path(app, pipeline)}/stats",
        retryable=True,
        read=_reader(Stats.from_json),
    )
