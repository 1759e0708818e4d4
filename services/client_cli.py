"""``wsched tenants|apps|pipelines|tasks``: the HTTP API from the command line
(``wsched schedules`` is in ``client_cli_schedules``).

Every command goes through the Python SDK (``wsched.Client``), so the CLI retries,
chunks and maps errors exactly as a program using the SDK does; this module only reads
arguments and prints. It prints what the API answered (each model's ``raw``), so its
output does not change when the SDK's models gain fields.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

import wsched
from services.placement import TopicMode

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

tenants = typer.Typer(no_args_is_help=True, help="Tenants (operator key).")
apps = typer.Typer(no_args_is_help=True, help="A tenant's applications.")
pipelines = typer.Typer(no_args_is_help=True, help="Pipelines of an application.")
tasks = typer.Typer(no_args_is_help=True, help="Submit, read, watch and cancel tasks.")


class ClientSettings(BaseSettings):
    """Where the API is and who the caller is: ``WSCHED_API_URL``, ``WSCHED_API_KEY``."""

    model_config = SettingsConfigDict(env_prefix="WSCHED_", extra="ignore")

    api_url: str = "http://127.0.0.1:8080"
    api_key: SecretStr | None = None
    operator_key: SecretStr = SecretStr("dev-operator-key")


@contextmanager
def _client(*, operator: bool = False) -> Iterator[wsched.Client]:
    """An SDK client from the settings; its errors end the command with their message."""
    settings = ClientSettings()
    key = settings.operator_key if operator else settings.api_key
    if key is None:
        err.print(
            "[red]No API key[/]: set WSCHED_API_KEY to the key `wsched tenants create` printed."
        )
        raise typer.Exit(2)
    with wsched.Client(settings.api_url, api_key=key.get_secret_value()) as client:
        try:
            yield client
        except wsched.ConnectionFailed as error:
            err.print(
                f"[red]Cannot reach the API at {settings.api_url}[/]: {error.reason}. "
                "Is `wsched dev` running? Set WSCHED_API_URL otherwise."
            )
            raise typer.Exit(1) from error
        except wsched.WschedError as error:
            err.print(f"[red]{error}[/]")
            raise typer.Exit(1) from error


def _show(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


# -- tenants and applications -----------------------------------------------------------


@tenants.command("create")
def tenant_create(name: str) -> None:
    """Create a tenant; prints its API key (shown once)."""
    with _client(operator=True) as client:
        tenant = client.tenants.create(name)
    _show(tenant.raw)
    err.print(f"export WSCHED_API_KEY={tenant.api_key}")


@tenants.command("list")
def tenant_list() -> None:
    with _client(operator=True) as client:
        _show({"tenants": [tenant.raw for tenant in client.tenants.list()]})


GraceOption = Annotated[
    int,
    typer.Option(
        "--grace-s",
        min=0,
        help="Seconds the replaced one stays valid (0: refused at once; at most a week).",
    ),
]


@tenants.command("get")
def tenant_get(name: str) -> None:
    """A tenant with its quotas (in force, and its overrides), its usage, its state and how
    far its deletion got."""
    with _client(operator=True) as client:
        _show(client.tenants.get(name).raw)


@tenants.command("rotate-key")
def tenant_rotate_key(name: str, grace_s: GraceOption = 0) -> None:
    """Issue a new API key (shown once); the current one stays valid --grace-s seconds."""
    with _client(operator=True) as client:
        rotated = client.tenants.rotate_key(name, grace_s=grace_s)
    _show({"previous_key_valid_until": rotated.previous_valid_until})
    err.print(f"export WSCHED_API_KEY={rotated.secret}")


@tenants.command("revoke-key")
def tenant_revoke_key(name: str) -> None:
    """Refuse every key of the tenant at once (rotate-key issues a new one)."""
    with _client(operator=True) as client:
        client.tenants.revoke_key(name)
    err.print(f"every key of tenant {name} is refused; `wsched tenants rotate-key` issues one")


@tenants.command("delete")
def tenant_delete(name: str) -> None:
    """Delete a tenant: its pipelines, namespace and tasks go in the background
    (`wsched tenants get NAME` shows the progress)."""
    with _client(operator=True) as client:
        _show(client.tenants.delete(name).raw)


_QUOTA_HELP = "0: unbounded for this tenant."


@tenants.command("quota")
def tenant_quota(
    name: str,
    max_pipelines: Annotated[int | None, typer.Option(help=_QUOTA_HELP, min=0)] = None,
    max_backlog: Annotated[int | None, typer.Option(help=_QUOTA_HELP, min=0)] = None,
    submit_rate: Annotated[
        float | None, typer.Option(help=f"Tasks a second. {_QUOTA_HELP}", min=0)
    ] = None,
    submit_burst: Annotated[int | None, typer.Option(help="The bucket's size.", min=0)] = None,
    max_request_bytes: Annotated[int | None, typer.Option(help=_QUOTA_HELP, min=0)] = None,
    default: Annotated[
        list[str] | None,
        typer.Option(help="A quota to return to the operator's default (repeatable)."),
    ] = None,
) -> None:
    """Override a tenant's quotas; those not named are unchanged."""
    given = {
        "max_pipelines": max_pipelines,
        "max_backlog": max_backlog,
        "submit_rate": submit_rate,
        "submit_burst": submit_burst,
        "max_request_bytes": max_request_bytes,
    }
    changes: dict[str, float | None] = {k: v for k, v in given.items() if v is not None}
    changes |= dict.fromkeys(default or [])
    if not changes:
        err.print("[red]Nothing to change[/]: name a quota, e.g. --submit-rate 500.")
        raise typer.Exit(2)
    with _client(operator=True) as client:
        _show(client.tenants.set_quotas(name, **changes).raw)


@tenants.command("me")
def tenant_me() -> None:
    """Your tenant (WSCHED_API_KEY): its quotas and its usage."""
    with _client() as client:
        _show(client.tenants.me().raw)


@apps.command("create")
def app_create(name: str) -> None:
    with _client() as client:
        _show(client.applications.create(name).raw)


@apps.command("list")
def app_list() -> None:
    with _client() as client:
        _show({"applications": [app.raw for app in client.applications.list()]})


@apps.command("delete")
def app_delete(name: str) -> None:
    with _client() as client:
        client.applications.delete(name)
    err.print(f"deleted application {name}")


# -- pipelines --------------------------------------------------------------------------


ChartOption = Annotated[
    str,
    typer.Option(
        help="A chart directory or .tgz, oci://REGISTRY/PATH/NAME, or a chart repository URL "
        "followed by the chart's name (https://charts.example.com/stable/echo)."
    ),
]
VersionOption = Annotated[
    str | None, typer.Option(help="The chart's version (repository and OCI charts).")
]
ValuesOption = Annotated[
    Path | None, typer.Option(help="A YAML or JSON file of chart values, as for helm -f.")
]
ScalingOption = Annotated[
    str | None,
    typer.Option(
        help="Scaling as JSON, e.g. "
        '\'{"min_replicas": 0, "max_replicas": 5, "tasks_per_replica": 20}\'.'
    ),
]


@pipelines.command("create")
def pipeline_create(
    app: str,
    name: str,
    chart: ChartOption,
    chart_version: VersionOption = None,
    topic: Annotated[
        TopicMode | None,
        typer.Option(
            help="dedicated: a Kafka topic of its own (big pipelines); shared: a partition "
            "of the topic small pipelines share. Default: the API's (WSCHED_PIPELINE_TOPIC).",
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(help="Partitions of a dedicated topic (the API's default: 2)."),
    ] = None,
    max_attempts: Annotated[int, typer.Option()] = 3,
    lease_timeout_s: Annotated[int, typer.Option()] = 30,
    values: ValuesOption = None,
    scaling: ScalingOption = None,
    wait: Annotated[bool, typer.Option(help="Wait until the pipeline is ready.")] = True,
) -> None:
    """Create a pipeline; prints its worker token (shown once)."""
    with _client() as client:
        created = client.pipelines.create(
            app,
            name,
            chart=chart,
            topic=None if topic is None else topic.value,
            partitions=partitions,
            max_attempts=max_attempts,
            lease_timeout_s=lease_timeout_s,
            wait_ready_s=120 if wait else None,
            **_chart_fields(chart_version, values, scaling),
        )
    _show(created.raw)


@pipelines.command("update")
def pipeline_update(
    app: str,
    name: str,
    chart: Annotated[str | None, typer.Option(help="A new chart (see `create`).")] = None,
    chart_version: VersionOption = None,
    values: ValuesOption = None,
    scaling: ScalingOption = None,
    max_attempts: Annotated[int | None, typer.Option()] = None,
    lease_timeout_s: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Change a pipeline; its chart is deployed again (a new Helm revision)."""
    fields = _chart_fields(chart_version, values, scaling)
    given = (chart, max_attempts, lease_timeout_s)
    if not fields and all(value is None for value in given):
        err.print("[red]Nothing to change[/]: give --chart, --values, --scaling ...")
        raise typer.Exit(2)
    with _client() as client:
        updated = client.pipelines.update(
            app,
            name,
            chart=chart,
            max_attempts=max_attempts,
            lease_timeout_s=lease_timeout_s,
            **fields,
        )
    _show(updated.raw)


def _chart_fields(version: str | None, values: Path | None, scaling: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if version is not None:
        fields["chart_version"] = version
    if values is not None:
        fields["values"] = _mapping_from(values.read_text(), f"--values {values}")
    if scaling is not None:
        fields["scaling"] = _mapping_from(scaling, "--scaling")
    return fields


def _mapping_from(text: str, what: str) -> dict[str, Any]:
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise typer.BadParameter(f"{what} is not YAML or JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter(f"{what} must be a mapping of keys to values")
    return parsed


@pipelines.command("list")
def pipeline_list(app: str) -> None:
    with _client() as client:
        _show({"pipelines": [p.raw for p in client.pipelines.list(app)]})


@pipelines.command("get")
def pipeline_get(app: str, name: str) -> None:
    with _client() as client:
        _show(client.pipelines.get(app, name).raw)


@pipelines.command("delete")
def pipeline_delete(app: str, name: str) -> None:
    with _client() as client:
        _show(client.pipelines.delete(app, name).raw)


@pipelines.command("rotate-token")
def pipeline_rotate_token(app: str, name: str, grace_s: GraceOption = 0) -> None:
    """Issue a new worker token (shown once) and deploy the workers again with it; the
    current one stays valid --grace-s seconds."""
    with _client() as client:
        rotated = client.pipelines.rotate_token(app, name, grace_s=grace_s)
    _show(rotated.raw)


# -- tasks ------------------------------------------------------------------------------


def _read_tasks(data: str | None, file: Path | None) -> list[dict[str, Any]]:
    """One JSON object, a JSON array of objects, or JSON lines (from a file or stdin)."""
    text = data if data is not None else (file.read_text() if file else sys.stdin.read())
    text = text.strip()
    try:
        parsed = json.loads(text)
        items = parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError:
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise typer.BadParameter(f"not JSON, a JSON array or JSON lines: {error}") from None
    if not items or not all(isinstance(item, dict) for item in items):
        raise typer.BadParameter("each task must be a JSON object")
    return items


@tasks.command("submit")
def task_submit(
    app: str,
    pipeline: str,
    data: Annotated[str | None, typer.Argument(help="A JSON object; else --file or stdin.")] = None,
    file: Annotated[Path | None, typer.Option(help="JSON, a JSON array or JSON lines.")] = None,
    task_id: Annotated[str | None, typer.Option("--id", help="Idempotency key (one task).")] = None,
    delay: Annotated[
        str | None, typer.Option(help="Run after this long: 30s, 15m, 1h30m, PT15M.")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Run at this RFC 3339 time, e.g. 2026-12-01T09:00Z.")
    ] = None,
    expires_after: Annotated[
        str | None, typer.Option(help="Not started within this long (10m): never start.")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="Or not started by this RFC 3339 time: never start.")
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help="This task's attempts, over its pipeline's setting.")
    ] = None,
) -> None:
    """Submit one task or many (batches of up to 10,000), now or later."""
    items = _read_tasks(data, file)
    options: dict[str, Any] = {
        "delay": delay,
        "run_at": at,
        "expires_after": expires_after,
        "expires_at": expires_at,
        "retry": None if max_attempts is None else wsched.TaskRetry(max_attempts=max_attempts),
    }
    with _client() as client:
        target = client.tasks(app, pipeline)
        if len(items) == 1:
            handle = target.submit(items[0], id=task_id, **options)
            existing = handle.existing
            _show(existing.raw if existing else {"id": handle.id, "status": handle.status})
            return
        outcome = target.submit_many(items, **options)
    err.print(f"queued {outcome.queued} of {len(items)} tasks")


@tasks.command("get")
def task_get(
    app: str,
    pipeline: str,
    task_id: str,
    attempts: Annotated[
        bool, typer.Option(help="Also list every attempt: worker, times, outcome, error.")
    ] = False,
) -> None:
    with _client() as client:
        _show(client.tasks(app, pipeline).get(task_id, attempts=attempts).raw)


@tasks.command("list")
def task_list(
    app: str,
    pipeline: str,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
    created_after: Annotated[
        str | None,
        typer.Option(help="Only tasks created at or after this RFC 3339 time (with offset)."),
    ] = None,
    created_before: Annotated[
        str | None,
        typer.Option(help="Only tasks created before this RFC 3339 time (with offset)."),
    ] = None,
) -> None:
    with _client() as client:
        page = client.tasks(app, pipeline).list(
            status=status or None,
            limit=limit,
            created_after=created_after,
            created_before=created_before,
        )
    table = Table("id", "status", "attempt", "worker", "finished_at", "error")
    for task in page.tasks:
        table.add_row(
            task.id,
            task.status,
            str(task.attempt),
            task.worker or "",
            str(task.raw.get("finished_at") or ""),  # as the API wrote it
            (task.error or "")[:60],
        )
    out.print(table)
    if page.next_cursor:
        err.print("more: use the API's ?cursor= to page on")


@tasks.command("cancel")
def task_cancel(app: str, pipeline: str, task_id: str) -> None:
    with _client() as client:
        _show(client.tasks(app, pipeline).cancel(task_id).raw)


@tasks.command("requeue")
def task_requeue(app: str, pipeline: str, task_id: str) -> None:
    with _client() as client:
        _show(client.tasks(app, pipeline).requeue(task_id).raw)


@tasks.command("watch")
def task_watch(
    app: str,
    pipeline: str,
    until_done: Annotated[
        bool, typer.Option(help="Exit once nothing is queued or running.")
    ] = False,
    interval_s: Annotated[
        float, typer.Option(help="Seconds between reads of /stats, for an API without events.")
    ] = 1.0,
) -> None:
    """A live progress bar of the pipeline's tasks by status (Ctrl-C stops watching).

    Follows the pipeline's event stream: the bar moves when a change is durable."""
    with (
        _client() as client,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=err,
        ) as progress,
    ):
        bar = progress.add_task(pipeline, total=None, detail="")
        counts: dict[str, int] = {}
        for counts in _counts(client.tasks(app, pipeline), interval_s):
            done = sum(counts.get(status, 0) for status in wsched.TERMINAL_STATUSES)
            total = done + counts.get("queued", 0) + counts.get("leased", 0)
            detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
            progress.update(bar, total=total or None, completed=done, detail=detail)
            if until_done and total and done == total:
                break
    _show(counts)


def _counts(tasks: wsched.Tasks, interval_s: float) -> Iterator[dict[str, int]]:
    """The pipeline's counts now, then after each change the event stream announces.

    An API older than the stream answers its route 404 although the pipeline exists
    (its /stats was just read): then /stats is read every ``interval_s`` instead.
    """
    counts = dict(tasks.stats().counts)
    yield counts
    try:
        for event in tasks.events():
            # The stream's first ``counts`` is read after it subscribed: no change falls
            # between it and the ``tasks`` events that follow.
            if event.kind in ("counts", "tasks") and event.counts:
                # Only the statuses /stats names (the grain's counters also carry a backlog).
                counts = {**counts, **{k: v for k, v in event.counts.items() if k in counts}}
            elif event.kind == "gap":
                counts = dict(tasks.stats().counts)
            else:
                continue
            yield counts
    except wsched.NotFound:
        while True:
            time.sleep(interval_s)
            yield dict(tasks.stats().counts)


def register(app: typer.Typer) -> None:
    app.add_typer(tenants, name="tenants")
    app.add_typer(apps, name="apps")
    app.add_typer(pipelines, name="pipelines")
    app.add_typer(tasks, name="tasks")
