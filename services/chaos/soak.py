"""``wsched chaos``: the whole soak, from starting the processes to the verdict.

Order: start Kafka, TiDB (both on data directories kept across a ``kill -9``), three
replicas and two APIs; create a tenant with a pipeline for the submitted tasks and one
for the schedules; start the workers and the submitter (paced, so that tasks flow during
every fault); inject the faults of the seeded plan at their offsets; wait for the
submitter; pause the schedules; wait, bounded, until every accepted task and every run
is terminal and ``/stats`` has caught up; then read everything back (``audit``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.chaos.cluster import OPERATOR_KEY, Cluster
from services.chaos.drain import Ending, finish
from services.chaos.plan import Fault, make_plan
from services.chaos.submitter import task_id
from services.chaos.tenant import Pipeline, SoakFailed, Tenant, until
from services.infra.cache import Cache
from services.infra.process import Service
from services.store.engine import make_engine

Say = Callable[[str], None]
Report = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Options:
    tasks: int = 200_000
    replica_kills: int = 10
    #: Also ``kill -9`` Kafka once and TiDB once.
    infra_kills: bool = True
    seed: int = 0
    #: Tasks per second the submitter offers; the soak's span is ``tasks / rate``.
    rate: float = 700.0
    batch: int = 500
    schedules: int = 2
    workers: int = 2
    drain_timeout_s: float = 900.0

    @property
    def span_s(self) -> float:
        return self.tasks / self.rate


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 2**31)


@dataclass(kw_only=True)
class Soak:
    """What the phases share: the processes, the tenant and what was started."""

    cluster: Cluster
    tenant: Tenant
    options: Options
    say: Say
    tasks: Pipeline
    ticks: Pipeline
    schedule_ids: dict[str, str]
    revived_workers: int = 0


def run(options: Options, *, cache: Cache, say: Say, keep: bool = False) -> Report:
    """The soak; its report. The work directory (data, logs) is kept when ``keep`` or
    when the soak failed, and removed otherwise."""
    for chatty in ("httpx", "alembic"):  # a line per request or migration drowns the faults
        logging.getLogger(chatty).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="wsched-chaos-"))
    plan = make_plan(
        seed=options.seed,
        replica_kills=options.replica_kills,
        replicas=3,
        span_s=options.span_s,
        infra_kills=options.infra_kills,
    )
    say(f"seed {options.seed} (replay with --seed {options.seed}); work dir {work}")
    for fault in plan:
        say(f"planned: {fault.describe()}")
    try:
        report = _run(options, plan, cache=cache, say=say, work=work)
    except BaseException:
        say(f"stopped; the logs are kept in {work}")
        raise
    report["work_dir"] = str(work)
    if keep or not report["ok"]:
        say(f"the logs are kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _run(options: Options, plan: list[Fault], *, cache: Cache, say: Say, work: Path) -> Report:
    started = time.monotonic()
    cluster = Cluster(cache=cache, work=work)
    with contextlib.ExitStack() as stack:
        say("starting Kafka, TiDB, 3 scheduler replicas and 2 API processes")
        stack.callback(cluster.stop)
        cluster.start()
        tenant = Tenant(api=cluster.api_urls[0], operator_key=OPERATOR_KEY)
        stack.callback(tenant.close)
        soak = _prepare(cluster, tenant, options, say)
        submitter = _start_submitter(soak)
        stack.callback(submitter.stop)
        _inject_all(soak, plan, submitter)
        accepted = _finish_submitting(soak, submitter)
        report = _drain_and_audit(soak, accepted)
    report.update(
        seed=options.seed,
        faults=[asdict(fault) for fault in plan],
        options=asdict(options),
        revived_workers=soak.revived_workers,
        duration_s=round(time.monotonic() - started),
    )
    return report


def _prepare(cluster: Cluster, tenant: Tenant, options: Options, say: Say) -> Soak:
    say("creating the pipelines, the schedules and the workers")
    pipelines = {name: tenant.pipeline(name) for name in ("tasks", "ticks")}
    schedule_ids = {
        f"every-1s-{n}": tenant.every_second(pipelines["ticks"], f"every-1s-{n}")
        for n in range(options.schedules)
    }
    for index in range(options.workers):
        p = pipelines["tasks"]
        cluster.start_worker(label=f"worker-tasks-{index}", pipeline_id=p.id, token=p.token)
    p = pipelines["ticks"]
    cluster.start_worker(label="worker-ticks-0", pipeline_id=p.id, token=p.token)
    return Soak(
        cluster=cluster,
        tenant=tenant,
        options=options,
        say=say,
        tasks=pipelines["tasks"],
        ticks=pipelines["ticks"],
        schedule_ids=schedule_ids,
    )


def _start_submitter(soak: Soak) -> Service:
    opts, work = soak.options, soak.cluster.work
    argv = [sys.executable, "-m", "services.chaos.submitter"]
    argv += ["--apis", ",".join(soak.cluster.api_urls), "--key", soak.tenant.key]
    argv += ["--pipeline-path", soak.tasks.path, "--tasks", str(opts.tasks)]
    argv += ["--batch", str(opts.batch), "--rate", str(opts.rate)]
    argv += ["--out", str(work / "submitted.json")]
    soak.say(f"submitting {opts.tasks:,} tasks at {opts.rate:,.0f}/s over {opts.span_s:.0f}s")
    submitter = Service(name="submitter", argv=argv, log_path=work / "submitter.log")
    submitter.start()
    return submitter


def _revive_workers(soak: Soak) -> None:
    """A worker that gave up (its scheduler calls failed past their bound) is restarted:
    the soak is about the scheduler's guarantees, not about one worker's retry budget."""
    for worker in soak.cluster.workers:
        if not worker.running():
            soak.say(f"{worker.name} exited; restarting it:\n{worker.log_tail(5)}")
            worker.stop()
            worker.start()
            soak.revived_workers += 1


def _wait_until(soak: Soak, offset_s: float, started: float) -> None:
    while time.monotonic() < started + offset_s:
        _revive_workers(soak)
        time.sleep(min(0.5, max(0.0, started + offset_s - time.monotonic())))


def _inject_all(soak: Soak, plan: list[Fault], submitter: Service) -> None:
    started = time.monotonic()
    for fault in plan:
        _wait_until(soak, fault.at_s, started)
        late = time.monotonic() - started - fault.at_s
        soak.say(f"{fault.describe()}" + (f" ({late:.1f}s late)" if late > 1 else ""))
        _inject(soak.cluster, fault)


def _inject(cluster: Cluster, fault: Fault) -> None:
    if fault.target == "replica":
        node = cluster.scheduler_nodes[fault.replica]
        node.kill()
        time.sleep(fault.down_s)  # the outage itself, not a wait for a condition
        node.start()
    elif fault.target == "kafka":
        cluster.kill_broker()
        time.sleep(fault.down_s)
        cluster.broker.start()
    else:
        cluster.kill_tidb()
        time.sleep(fault.down_s)
        cluster.tidb.start()


def _finish_submitting(soak: Soak, submitter: Service) -> dict[str, float]:
    """Task id -> unix time of its 202, once the submitter is done."""
    timeout = soak.options.span_s + 900

    def done() -> bool:
        _revive_workers(soak)
        return not submitter.running()

    until(done, timeout_s=timeout, what="the submitter to finish")
    out = soak.cluster.work / "submitted.json"
    if not out.exists():
        raise SoakFailed(f"the submitter failed:\n{submitter.log_tail()}")
    summary = json.loads(out.read_text())
    soak.say(
        f"submitted: {sum(c for _, c, _ in summary['accepted']):,} accepted, "
        f"{summary['retries']} retries, {len(summary['abandoned'])} batches abandoned, "
        f"by API {summary['by_api']}"
    )
    return {
        task_id(i): at
        for start, count, at in summary["accepted"]
        for i in range(start, start + count)
    }


def _drain_and_audit(soak: Soak, accepted: dict[str, float]) -> Report:
    engine = make_engine(soak.cluster.database_url)
    try:
        ending = Ending(
            engine=engine,
            tenant=soak.tenant,
            tasks=soak.tasks,
            ticks=soak.ticks,
            schedules=soak.schedule_ids,
            executions_dir=soak.cluster.executions_dir,
            timeout_s=soak.options.drain_timeout_s,
            say=soak.say,
        )
        return finish(ending, accepted)
    finally:
        engine.dispose()


def render(report: Report) -> str:
    """The report as a person reads it."""
    t, opts = report["tasks"], report["options"]
    infra = ", Kafka and TiDB once each" if opts["infra_kills"] else ""
    lines = [
        f"chaos soak, seed {report['seed']}: {opts['tasks']:,} tasks, "
        f"{opts['replica_kills']} replica kills{infra}, {report['duration_s']}s",
        f"  accepted (202)            {t['accepted']:>10,}",
        f"  succeeded                 {t['succeeded']:>10,}",
        f"  other terminal            {t['other_terminal'] or '          -'}",
        f"  lost                      {t['lost']:>10,}  (accepted, missing {t['missing']} "
        f"or not terminal {t['stuck']})",
        f"  stuck                     {t['stuck']:>10,}",
        f"  executed more than once   {t['executed_more_than_once']:>10,}  (distinct lease "
        f"tokens; under one token twice: {t['same_token_twice']})",
        f"  longest wait              {t['longest_wait_s']:>10,.1f}s (202 -> finished, "
        f"{t['longest_wait_task']})",
        f"  /stats equals the rows    {'yes' if report['stats_equal'] else 'NO'}",
    ]
    for run in report["schedules"]:
        lines.append(
            f"  schedule {run['name']:<16} {run['runs']:>10,} runs from "
            f"{run['first']} to {run['last']}: missing {run['missing']}, doubled "
            f"{run['doubled']}, not terminal {run['not_terminal']}, executed twice "
            f"{run['executed_more_than_once']}"
        )
    if report["revived_workers"]:
        lines.append(
            f"  workers restarted         {report['revived_workers']:>10,}  (see their logs)"
        )
    lines.append(f"  verdict                   {'OK' if report['ok'] else 'FAILED'}")
    return "\n".join(lines)
