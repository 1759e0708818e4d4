"""The ``wsched`` command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services import client_cli, client_cli_schedules
from services.observability import configure_logging
from services.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Workload Scheduler.")
infra_app = typer.Typer(no_args_is_help=True, help="Provision the real components for tests.")
db_app = typer.Typer(no_args_is_help=True, help="Manage the database schema.")
app.add_typer(infra_app, name="infra")
app.add_typer(db_app, name="db")
client_cli.register(app)
client_cli_schedules.register(app)
console = Console(stderr=True, soft_wrap=True)

COMPONENTS = ("kafka", "tidb", "helm", "kube", "registry")


def _settings() -> Settings:
    settings = Settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    return settings


@app.command()
def dev() -> None:
    """Run the whole product locally: broker, API and scheduler (Ctrl-C stops all)."""
    from services import devstack

    code = devstack.run(
        _settings(),
        say=lambda text: console.print(f"[green]wsched dev[/]: {text}"),
        warn=lambda text: console.print(f"[bold red]WARNING[/]: {text}"),
    )
    raise typer.Exit(code)


@app.command()
def api() -> None:
    """Serve the HTTP API."""
    import uvicorn

    from services.api.app import create_app
    from services.heap import freeze_startup_heap

    settings = _settings()
    # JSON logs: uvicorn's loggers propagate to ours instead of its own text handlers.
    log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
    app = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(
        app,
        log_config=log_config,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        # Waiters (up to 60 s) and event streams (minutes) would otherwise hold a stop
        # until they end; cut, their clients ask again or resume with Last-Event-ID.
        timeout_graceful_shutdown=10,
    )


@app.command()
def scheduler() -> None:
    """Run a scheduler replica."""
    from services import aio
    from services.scheduler.main import serve

    aio.run(serve(_settings()))


@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    tasks: Annotated[
        int | None, typer.Option(help="Tasks end to end (default 100,000; 2,000 with --quick).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    backlog: Annotated[
        int | None,
        typer.Option(help="Backlog tasks, 0 skips (default 1,000,000; 5,000 with --quick)."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: a smoke run.")] = False,
) -> None:
    """Benchmark the stated workload end to end, beside Kafka and TiDB alone (the floor)."""
    from services.bench import run as bench_run
    from services.bench.report import render
    from services.bench.system import Options
    from services.infra.cache import Cache

    options = Options.build(tasks=tasks, workers=workers, backlog=backlog, quick=quick)
    report = bench_run.run(
        options,
        cache=Cache(root=_settings().cache_dir),
        say=lambda text: console.print(f"[cyan]bench[/]: {text}"),
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        Console().print(render(report))


@app.command("bench-waiters")
def bench_waiters(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    waiters: Annotated[int, typer.Option(help="Concurrent waiters (one task each).")] = 1000,
    rate: Annotated[float, typer.Option(help="Tasks reported succeeded per second.")] = 200.0,
) -> None:
    """Live results: many `?wait=` waiters on one API process; the latency they add from
    "terminal in TiDB" to the answer, and the API's CPU."""
    from services.bench import waiters as bench_waiters_run
    from services.infra.cache import Cache

    report = bench_waiters_run.run(
        bench_waiters_run.Options(waiters=waiters, rate=rate),
        cache=Cache(root=_settings().cache_dir),
        say=lambda text: console.print(f"[cyan]bench-waiters[/]: {text}"),
    )
    typer.echo(json.dumps(report, indent=None if as_json else 2))


@app.command("bench-worker")
def bench_worker(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    tasks: Annotated[int, typer.Option(min=1, help="Tasks per phase (cold, warm).")] = 5000,
    concurrency: Annotated[int, typer.Option(min=1, help="The agent's concurrency.")] = 32,
) -> None:
    """The real worker path: `wsched worker` + `wsched executor` on the echo chart, a shell
    per task and a Python handler, cold and warm, with each process's CPU per task."""
    from services.bench import worker_path
    from services.infra.cache import Cache

    report = worker_path.run(
        worker_path.Options(tasks=tasks, concurrency=concurrency),
        cache=Cache(root=_settings().cache_dir),
        say=lambda text: console.print(f"[cyan]bench-worker[/]: {text}"),
    )
    typer.echo(json.dumps(report, indent=None if as_json else 2))


@app.command("bench-idle")
def bench_idle(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    pipelines: Annotated[int, typer.Option(help="Empty pipelines to create.")] = 200,
    measure_s: Annotated[float, typer.Option(help="Seconds of each idle measurement.")] = 30.0,
    idle_timeout_s: Annotated[
        float, typer.Option(help="The replica's grain idle timeout (0: never deactivate).")
    ] = 10.0,
    topic: Annotated[
        str, typer.Option(help="The pipelines' topic: shared, or dedicated (one each).")
    ] = "shared",
    failover: Annotated[
        bool,
        typer.Option(help="Then SIGKILL the replica once a second one joined; time the takeover."),
    ] = False,
    timers: Annotated[
        bool,
        typer.Option(
            help="Then a task due minutes later to each: idle with resting grains, and lateness."
        ),
    ] = False,
) -> None:
    """What empty pipelines cost one scheduler replica: its idle CPU and RSS and the
    broker's, with none and with PIPELINES, then one task to each until all are admitted."""
    from services.bench import idle
    from services.infra.cache import Cache

    options = idle.Options(
        pipelines=pipelines,
        measure_s=measure_s,
        idle_timeout_s=idle_timeout_s,
        topic=topic,
        failover=failover,
        timers=timers,
    )
    report = idle.run(
        options,
        cache=Cache(root=_settings().cache_dir),
        say=lambda text: console.print(f"[cyan]bench-idle[/]: {text}"),
    )
    typer.echo(json.dumps(report, indent=None if as_json else 2))


@app.command("bench-fairness")
def bench_fairness(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    seconds: Annotated[float, typer.Option(help="Seconds each phase submits for.")] = 20.0,
    rate: Annotated[float, typer.Option(help="Tenant B's tasks per second.")] = 20.0,
    flood_rate: Annotated[
        float, typer.Option(help="Tenant A's submit_rate quota, tasks per second.")
    ] = 500.0,
    flood_clients: Annotated[int, typer.Option(help="Tenant A's concurrent connections.")] = 8,
    hammer: Annotated[
        bool, typer.Option(help="Tenant A sends again at once after a 429 (no Retry-After).")
    ] = False,
) -> None:
    """Fair use: tenant B's submit and end-to-end p99, alone and while tenant A floods at
    its submit_rate quota (the goal: within 1.5x)."""
    from services.bench import fairness as bench_fairness_run
    from services.infra.cache import Cache

    report = bench_fairness_run.run(
        bench_fairness_run.Options(
            seconds=seconds,
            rate=rate,
            flood_rate=flood_rate,
            flood_clients=flood_clients,
            flood_honours_retry_after=not hammer,
        ),
        cache=Cache(root=_settings().cache_dir),
        say=lambda text: console.print(f"[cyan]bench-fairness[/]: {text}"),
    )
    typer.echo(json.dumps(report, indent=None if as_json else 2))


@app.command("bench-schedules")
def bench_schedules(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    schedules: Annotated[
        int | None,
        typer.Option(help="Schedules of @every 10s, 0 skips (default 50,000; 500 with --quick)."),
    ] = None,
    delayed: Annotated[
        int | None,
        typer.Option(help="Delayed tasks, 0 skips (default 1,000,000)."),
    ] = None,
    delayed_span: Annotated[
        float | None,
        typer.Option(help="Seconds over which the delayed tasks fall due (default 600)."),
    ] = None,
    delayed_lead: Annotated[
        float | None,
        typer.Option(
            help="Seconds from the delayed phase's start to the first due time (default: "
            "the tasks / 4,000, 60 at least, so the scheduler admits them all first)."
        ),
    ] = None,
    dispatch: Annotated[
        int | None,
        typer.Option(help="Schedules fired with workers running, 0 skips (default 10,000)."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: a smoke run.")] = False,
) -> None:
    """Benchmark schedule firing: triggers admitted per second and their lateness."""
    from services.bench import triggers
    from services.infra.cache import Cache

    report = triggers.run(
        triggers.Options.build(
            schedules=schedules,
            quick=quick,
            delayed=delayed,
            dispatch=dispatch,
            delayed_span_s=delayed_span,
            delayed_lead_s=delayed_lead,
        ),
        cache=Cache(root=_settings().cache_dir),
        say=lambda text: console.print(f"[cyan]bench-schedules[/]: {text}"),
    )
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else triggers.render(report))


@app.command("bench-compare")
def bench_compare(
    base: Annotated[str, typer.Argument(help="The commit to compare against (e.g. HEAD~1).")],
    runs: Annotated[int, typer.Option(min=1, help="Runs of each side.")] = 3,
    tasks: Annotated[int, typer.Option(help="Tasks end to end per run.")] = 100_000,
    backlog: Annotated[int, typer.Option(help="Backlog tasks per run (0 skips).")] = 0,
    out: Annotated[Path, typer.Option(help="Where the reports and summary go.")] = Path(
        "bench-compare"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run `wsched bench` of BASE and of this checkout in turn (ABBA) and print medians."""
    from services.bench import compare

    settings = _settings()
    say = lambda text: console.print(f"[cyan]bench-compare[/]: {text}")  # noqa: E731
    repo = Path.cwd()
    try:
        summary = compare.compare(
            base=compare.prepare_base(
                repo=repo, rev=base, root=settings.cache_dir / "bench-base", say=say
            ),
            head=compare.head_side(repo),
            runs=runs,
            bench_args=["--tasks", str(tasks), "--backlog", str(backlog)],
            out=out,
            say=say,
        )
    except compare.CompareFailed as err:
        console.print(f"[red]bench-compare failed[/]: {err}")
        raise typer.Exit(1) from err
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        Console().print(compare.render(summary))


@app.command("bench-celery")
def bench_celery(
    tasks: Annotated[int, typer.Option(min=1, help="Tasks for each Celery setup.")] = 100_000,
    ours: Annotated[
        Path | None,
        typer.Option(help="A `wsched bench --json` report: print ours beside Celery, and ratios."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Benchmark Celery 5 with Redis on our workload: (a) fastest, (b) with our guarantees."""
    from services.bench.celery_report import CeleryBenchFailed, parse_ours, ratios, render
    from services.bench.report import render as render_ours

    try:
        mine = parse_ours(ours.read_text()) if ours else None
        from services.bench import celery_side  # the bench extra: Celery and redis-py
    except (CeleryBenchFailed, OSError) as err:
        console.print(f"[red]bench-celery[/]: {err}")
        raise typer.Exit(2) from err
    except ImportError as err:
        console.print(f"[red]bench-celery[/]: {err}: `make bench` installs the bench extra")
        raise typer.Exit(2) from err
    try:
        report = celery_side.run(
            tasks=tasks, say=lambda text: console.print(f"[cyan]bench-celery[/]: {text}")
        )
    except CeleryBenchFailed as err:
        console.print(f"[red]bench-celery failed[/]: {err}")
        raise typer.Exit(1) from err
    if mine is not None:
        report["vs_ours"] = ratios(mine, report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if mine is not None:
        Console().print(render_ours(mine))
    Console().print(render(report))


@app.command("bench-deploy")
def bench_deploy(
    pipelines: Annotated[int, typer.Option(help="Pipelines per phase.", min=1, max=500)] = 20,
) -> None:
    """Benchmark Helm deploys and the built-in scaler on the real kube-apiserver (JSON)."""
    from services.bench import deploy
    from services.infra.cache import Cache

    report = deploy.run(
        Cache(root=_settings().cache_dir),
        pipelines=pipelines,
        say=lambda text: console.print(f"[cyan]bench-deploy[/]: {text}"),
    )
    typer.echo(json.dumps(report, indent=2))


@app.command()
def chaos(
    tasks: Annotated[int, typer.Option(min=1, help="Tasks submitted.")] = 200_000,
    kills: Annotated[int, typer.Option(min=0, help="kill -9s of scheduler replicas.")] = 10,
    seed: Annotated[
        int | None, typer.Option(help="Replay the fault schedule of this seed (printed).")
    ] = None,
    rate: Annotated[float, typer.Option(min=1, help="Tasks/s offered (span = tasks/rate).")] = 700,
    infra: Annotated[
        bool, typer.Option("--infra/--no-infra", help="Also kill -9 Kafka and TiDB once.")
    ] = True,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the data and logs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Soak: 3 replicas, 2 APIs, kill -9s on a seeded schedule; count every task (exit 1 if
    one is lost or a schedule's fire time is missing or doubled)."""
    from services.chaos import soak
    from services.infra.cache import Cache

    options = soak.Options(
        tasks=tasks,
        replica_kills=kills,
        infra_kills=infra,
        rate=rate,
        seed=seed if seed is not None else soak.new_seed(),
    )
    report = soak.run(
        options,
        cache=Cache(root=_settings().cache_dir),
        say=lambda text: console.print(f"[magenta]chaos[/]: {text}", highlight=False),
        keep=keep,
    )
    typer.echo(json.dumps(report, indent=2) if as_json else soak.render(report))
    raise typer.Exit(0 if report["ok"] else 1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the schema migrations to WSCHED_DATABASE_URL (SQLite under the data dir if unset)."""

    from services.store import migrate
    from services.store.engine import make_engine

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.effective_database_url()
    migrate.create_database(url)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, revision)
        console.print(f"database at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()


@app.command()
def worker() -> None:
    """Run a worker agent: poll a pipeline's tasks (or those of the pipelines listed in
    WSCHED_WORKER_PIPELINES) and run their steps (WSCHED_WORKER_*)."""
    from services.worker.agent_process import worker_main

    worker_main()


@app.command()
def executor(
    listen: Annotated[
        str | None,
        typer.Option(help="unix:///path.sock or host:port (WSCHED_WORKER_EXECUTOR_LISTEN)"),
    ] = None,
) -> None:
    """Run a command executor: the agent sends it each command of its steps."""
    from services.worker.executor import executor_main

    executor_main(listen=listen)


@infra_app.command("provision")
def infra_provision(
    components: Annotated[list[str] | None, typer.Argument(help=f"any of {COMPONENTS}")] = None,
) -> None:
    """Build or resolve the pinned components into the cache (idempotent), with timings."""
    from services.infra import provision_all

    settings = _settings()
    wanted = components or list(COMPONENTS)
    unknown = sorted(set(wanted) - set(COMPONENTS))
    if unknown:
        raise typer.BadParameter(f"unknown component(s) {unknown}; choose from {COMPONENTS}")
    started = time.monotonic()
    for name, seconds in provision_all(settings.cache_dir, wanted):
        console.print(f"[green]provisioned[/] {name} in {seconds:.1f}s")
    console.print(f"all provisioned in {time.monotonic() - started:.1f}s")


@infra_app.command("status")
def infra_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the figures recorded when each component was last built."""
    from services.infra.cache import Cache

    records = Cache(root=_settings().cache_dir).records()
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table("component", "version", "cold build/resolve s", "peak RSS MB")
    for name, rec in records.items():
        seconds = rec.get("build_s", rec.get("resolve_s", ""))
        table.add_row(
            name, str(rec.get("version", "")), str(seconds), str(rec.get("peak_rss_mb", ""))
        )
    Console().print(table)


@infra_app.command("bench")
def infra_bench() -> None:
    """Print warm provisioning, start-up time and idle memory of each component (JSON)."""
    from services.infra import bench
    from services.infra.cache import Cache

    typer.echo(json.dumps(bench.run(Cache(root=_settings().cache_dir)), indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
