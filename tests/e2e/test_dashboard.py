"""The dashboard in a real browser: Debian's chromium driven by Playwright, over the API
and a scheduler as processes on real Kafka and TiDB.

A tenant signs in, creates an application and a pipeline, submits tasks and watches the
counts move as a worker succeeds some and fails others to death, opens a dead task and
requeues it; the operator then sees every tenant's pipelines. The pipeline's page moves
by its event stream: tasks submitted over HTTP, outside the page, and the worker's results
show in its counts while the page reads no /stats, and a page left closes its stream.
Each page is saved as a screenshot under ``test-artifacts/dashboard/`` (gitignored), the
layout is checked at a phone's width, and every control must have an accessible name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    Page,
    Request,
    ViewportSize,
    async_playwright,
    expect,
)

from protos.wsched.v1 import worker_pb2
from services.worker.client import SchedulerClient
from tests.e2e.conftest import OPERATOR, Stack

pytestmark = pytest.mark.integration

#: Debian's chromium (the Makefile's browser-install puts it there): Playwright's own
#: browser builds cannot be downloaded here.
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
PHONE: ViewportSize = {"width": 390, "height": 844}
#: Roles of the controls that must each have an accessible name.
CONTROLS = "a, button, input, select, textarea, [role=button], [role=img]"
#: Run before the page's own script: keeps each EventSource the page makes, so that the
#: test can tell which are still open (none may outlive the view that opened it).
TRACK_STREAMS = """
(() => {
  const Native = window.EventSource;
  const made = [];
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      made.push(this);
    }
  };
  window.openStreams = () =>
    made.filter((s) => s.readyState !== Native.CLOSED).map((s) => new URL(s.url).pathname);
  window.streaming = () => made.some((s) => s.readyState === Native.OPEN);
})();
"""


@pytest.fixture
def chromium() -> str:
    assert CHROMIUM.exists(), "chromium is missing: run `make browser-install` (Debian's package)"
    return str(CHROMIUM)


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def new_tenant(stack: Stack) -> str:
    async with httpx.AsyncClient(base_url=stack.api, timeout=30) as http:
        created = await http.post(
            "/api/tenants",
            json={"name": f"acme-{uuid.uuid4().hex[:6]}"},
            headers={"Authorization": f"Bearer {OPERATOR}"},
        )
    assert created.status_code == 201, created.text
    key: str = created.json()["api_key"]
    return key


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def every_control_is_named(page: Page) -> None:
    """No link, button, field or chart without an accessible name (its label, text,
    aria-label or title), the name a screen reader says and a role query finds."""
    unnamed = await page.eval_on_selector_all(
        CONTROLS,
        """els => els.filter(el => {
            const label = [...(el.labels || [])].map(l => l.textContent).join('').trim();
            const own = (el.getAttribute('aria-label') || el.getAttribute('title') || '').trim();
            const text = ['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)
                ? '' : el.textContent.trim();
            return !(label || own || text);
        }).map(el => el.outerHTML.slice(0, 120))""",
    )
    assert unnamed == [], unnamed


async def fits_the_width(page: Page) -> None:
    """Nothing but a table's own scroller is wider than the screen."""
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the page is {overflow}px wider than the screen"


async def counted(page: Page, status: str, value: int) -> None:
    """Wait for the pipeline page's live count of ``status`` to read ``value``."""
    cell = page.locator(f'[data-count="{status}"]')
    await expect(cell).to_have_text(str(value), timeout=60_000)


async def open_streams(page: Page, count: int) -> list[str]:
    """Wait until the page has ``count`` event streams open (connecting or open); their
    paths."""
    await page.wait_for_function(f"() => window.openStreams().length === {count}")
    paths: list[str] = await page.evaluate("window.openStreams()")
    return paths


@contextlib.contextmanager
def stats_reads(page: Page) -> Iterator[list[str]]:
    """The GETs of a /stats route the page makes meanwhile (the REST read of the counts
    that the stream replaces)."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if request.method == "GET" and urlsplit(request.url).path.endswith("/stats"):
            seen.append(request.url)

    page.on("request", record)
    try:
        yield seen
    finally:
        page.remove_listener("request", record)


async def submit_over_http(stack: Stack, key: str, data: dict[str, object], copies: int) -> None:
    """Submit tasks as another client would, not through the page."""
    async with httpx.AsyncClient(
        base_url=stack.api, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        answer = await http.post(
            "/api/applications/shop/pipelines/orders/tasks",
            json={"tasks": [{"data": data}] * copies},
        )
    assert answer.status_code == 202, answer.text


async def task_state(stack: Stack, key: str, task_id: str) -> dict[str, object]:
    """A task of ``shop/orders`` as the API answers it."""
    async with httpx.AsyncClient(
        base_url=stack.api, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        answer = await http.get(f"/api/applications/shop/pipelines/orders/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    task: dict[str, object] = answer.json()
    return task


async def died_again(stack: Stack, key: str, task_id: str, *, after: object) -> dict[str, object]:
    """The task once it is ``dead`` with an end other than ``after``."""
    async with asyncio.timeout(60):
        while True:
            task = await task_state(stack, key, task_id)
            if task["status"] == "dead" and task["finished_at"] not in (None, after):
                return task
            await asyncio.sleep(0.2)


def shown_time(value: object) -> str:
    """A time as the dashboard shows it (``when`` in app.js): UTC, whole seconds."""
    moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def sign_in(page: Page, stack: Stack, key: str) -> None:
    await page.goto(f"{stack.api}/ui")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


@contextlib.asynccontextmanager
async def worker(
    stack: Stack, pipeline_id: str, token: str, *, fail: set[str]
) -> AsyncIterator[None]:
    """A worker that fails the tasks whose data names a ``fail`` value, succeeds the rest."""
    client = SchedulerClient(
        addresses=[stack.grpc], pipeline_id=pipeline_id, token=token, worker="ui-worker"
    )

    async def serve() -> None:
        while True:
            reply = await client.poll(max_tasks=20, wait_ms=1000)
            results = [
                worker_pb2.TaskResult(
                    lease_token=t.lease_token,
                    outcome=worker_pb2.OUTCOME_FAILED
                    if any(f.encode() in t.data for f in fail)
                    else worker_pb2.OUTCOME_SUCCEEDED,
                    result=t.data,
                    error="no such customer" if any(f.encode() in t.data for f in fail) else "",
                )
                for t in reply.tasks
            ]
            if results:
                await client.report(results)

    task = asyncio.create_task(serve())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def create_pipeline(page: Page) -> tuple[str, str]:
    """Create application ``shop`` and pipeline ``orders`` (one attempt) in the page; its
    id and worker token."""
    await page.get_by_label("Application name").fill("shop")
    await page.get_by_role("button", name="Create application").click()
    await expect(page.get_by_label("Application", exact=True)).to_have_value("shop")
    await page.get_by_label("Pipeline name").fill("orders")
    await page.get_by_label("Max attempts").fill("1")
    async with page.expect_response(lambda r: r.url.endswith("/pipelines")) as created:
        await page.get_by_role("button", name="Create pipeline").click()
    body = await (await created.value).json()
    token = page.locator('[data-worker-token="orders"]')
    await expect(token).to_have_text(body["worker_token"])
    await expect(page.get_by_role("link", name="orders")).to_be_visible()
    await expect(page.get_by_role("row", name="orders").get_by_text("ready")).to_be_visible(
        timeout=60_000
    )
    return body["id"], body["worker_token"]


async def submit(page: Page, data: str, copies: int) -> None:
    await page.get_by_label("Task data (JSON object)").fill(data)
    await page.get_by_label("Copies").fill(str(copies))
    await page.get_by_role("button", name="Submit", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text(f"{copies} task(s) submitted")


async def schedules(page: Page, stack: Stack, key: str) -> None:
    """A schedule's next fire times show; pause, resume and trigger it from the page."""
    async with httpx.AsyncClient(
        base_url=stack.api, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        made = await http.post(
            "/api/applications/shop/pipelines/orders/schedules",
            json={"name": "nightly", "cron": "0 3 * * *", "data": {"order": 9}},
        )
    assert made.status_code == 201, made.text
    # No event names a new schedule (the page would read it within its slow refresh):
    # reading the page again shows it now.
    await page.reload()
    row = page.get_by_role("row", name="nightly")
    await expect(row.get_by_role("cell", name="active")).to_be_visible()
    await expect(row).to_contain_text("03:00:00Z")
    await row.get_by_role("button", name="Pause nightly").click()
    await expect(row.get_by_role("cell", name="paused")).to_be_visible()
    await row.get_by_role("button", name="Resume nightly").click()
    await expect(row.get_by_role("cell", name="active")).to_be_visible()
    await row.get_by_role("button", name="Trigger nightly now").click()
    await expect(page.get_by_role("status")).to_contain_text("Schedule nightly triggered")
    await expect(row).to_contain_text("queued", timeout=30_000)
    await shot(page, "05-schedules")


async def test_a_tenant_works_its_pipeline_in_the_dashboard(stack: Stack, browser: Browser) -> None:
    key = await new_tenant(stack)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.add_init_script(TRACK_STREAMS)
    # The page's timers run on a clock the test can move forward (time flows meanwhile).
    await page.clock.install()
    errors: list[str] = []
    # The page asks who is signed in first: its 401 before signing in is the answer.
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None,
    )
    await page.goto(f"{stack.api}/ui")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await every_control_is_named(page)
    await shot(page, "01-sign-in")
    await sign_in(page, stack, key)
    assert await page.evaluate("document.cookie") == "", "the session cookie must be HttpOnly"
    assert key not in page.url

    pipeline_id, token = await create_pipeline(page)
    await every_control_is_named(page)
    await shot(page, "02-applications")

    await page.get_by_role("link", name="orders").click()
    await expect(page.get_by_role("heading", name="shop / orders")).to_be_visible()
    await counted(page, "queued", 0)
    stream = await open_streams(page, 1)
    assert stream == ["/api/applications/shop/pipelines/orders/events"], stream
    await page.wait_for_function("() => window.streaming()")
    # From here on the counts move by the stream alone: the page read /stats once, when it
    # opened (a page that polled would read it again before showing any change), and no
    # timer of the page reads it, however far its clock moves on (short of the slow
    # fallback, which reads no counts either).
    with stats_reads(page) as reads:
        await submit_over_http(stack, key, {"order": 1}, 3)
        await counted(page, "queued", 3)
        assert reads == [], f"the page read the counts over REST: {reads}"
        await page.clock.fast_forward(25_000)
        await submit(page, '{"order": "bad"}', 2)
        await counted(page, "queued", 5)
    assert reads == [], f"the page read the counts over REST: {reads}"
    await expect(page.get_by_role("button", name="Next tasks")).to_be_disabled()
    # The tasks filtered by creation time: none were created in the future.
    created_from = page.get_by_label("Created from")
    await created_from.fill("2099-01-01T00:00:00")
    await expect(page.get_by_text("No tasks created in that time.")).to_be_visible()
    await created_from.fill("")
    await expect(page.get_by_role("row").filter(has_text="queued")).to_have_count(5)
    async with worker(stack, pipeline_id, token, fail={"bad"}):
        with stats_reads(page) as reads:
            await counted(page, "succeeded", 3)
            await counted(page, "dead", 2)
            # The rows' statuses follow the events as well.
            await expect(page.get_by_role("row").filter(has_text="dead")).to_have_count(2)
        assert reads == [], f"the page read the counts over REST: {reads}"
        await expect(page.get_by_role("img", name="Tasks finished per second")).to_be_visible()
        await every_control_is_named(page)
        await shot(page, "03-pipeline")

        await page.get_by_label("Status").select_option("dead")
        dead = page.get_by_role("row").filter(has_text="dead").get_by_role("link")
        await expect(dead).to_have_count(2)
        await dead.first.click()
        await expect(page.get_by_role("heading", name="Task ")).to_be_visible()
        # The task's page follows the pipeline's stream too; the pipeline page's is closed.
        assert await open_streams(page, 1) == stream
        await expect(page.get_by_text("no such customer").first).to_be_visible()
        await expect(page.get_by_role("cell", name="ui-worker")).to_be_visible()
        await expect(page.get_by_role("list").get_by_text("finished: dead")).to_be_visible()
        await every_control_is_named(page)
        await shot(page, "04-task")
        task_id = unquote(page.url.rsplit("/", 1)[-1])
        first = await task_state(stack, key, task_id)
        await page.get_by_role("button", name="Requeue task").click()
        await expect(page.get_by_role("status")).to_contain_text("Requeueing")
        # Requeued with a fresh attempt count, it runs and fails again (its data is "bad"):
        # it dies anew, later. The page shows its new end by the stream, without a
        # reload (its shown time has whole seconds: it is compared with the API's, not
        # with the old one, which may fall in the same second).
        again = await died_again(stack, key, task_id, after=first["finished_at"])
        finished = page.locator(".stats div").filter(has_text="Finished").locator("dd")
        await expect(finished).to_have_text(shown_time(again["finished_at"]), timeout=15_000)
        await expect(page.get_by_role("list").get_by_text("finished: dead")).to_be_visible()

        await page.get_by_role("link", name="shop / orders").click()
        await page.get_by_role("button", name="Requeue all dead tasks").click()
        await expect(page.get_by_role("status")).to_contain_text("2 dead task(s) requeued")

    await schedules(page, stack, key)
    await page.get_by_role("link", name="← Applications").click()
    await expect(page.get_by_role("heading", name="Applications", exact=True)).to_be_visible()
    assert await open_streams(page, 0) == []
    await page.go_back()

    await page.set_viewport_size(PHONE)
    await page.reload()
    await expect(page.get_by_role("heading", name="shop / orders")).to_be_visible()
    await fits_the_width(page)
    await shot(page, "06-pipeline-phone")
    assert errors == [], errors


async def test_the_operator_sees_every_tenant(stack: Stack, browser: Browser) -> None:
    key = await new_tenant(stack)
    async with httpx.AsyncClient(
        base_url=stack.api, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        assert (await http.post("/api/applications", json={"name": "web"})).status_code == 201
        made = await http.post(
            "/api/applications/web/pipelines",
            json={"name": "thumbs", "chart": "charts/examples/echo"},
        )
        assert made.status_code == 201, made.text
    page = await browser.new_page(viewport=PHONE)
    await sign_in(page, stack, OPERATOR)
    overview = page.get_by_role("region", name="All pipelines")
    await expect(overview.get_by_role("row", name="thumbs")).to_be_visible()
    tenant = (await page.get_by_role("row", name="thumbs").locator("td").first.text_content()) or ""
    await page.get_by_label("Tenant", exact=True).select_option(label=tenant)
    await page.get_by_role("button", name="View tenant").click()
    await expect(page.get_by_text("read only")).to_be_visible()
    await expect(page.get_by_role("link", name="thumbs")).to_be_visible()
    assert await page.get_by_role("button", name="Create application").count() == 0
    await every_control_is_named(page)
    await fits_the_width(page)
    await shot(page, "07-operator-phone")
