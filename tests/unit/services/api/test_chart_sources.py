"""With the Helm deployer, a chart outside the operator's allow-list is a 422 at create and
at PATCH, naming the setting, and never showing a path of the API's machine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.services.api.conftest import LIMITS, Fakes
from tests.unit.services.api.harness import Api, assert_error, bearer, running_api, settings_for

REPO = Path(__file__).resolve().parents[4]
PIPELINES = "/api/applications/a/pipelines"


@pytest.fixture
async def helm_api(
    migrated_sqlite: str, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Api]:
    # Relative chart paths and roots are taken from the API's working directory.
    monkeypatch.chdir(REPO)
    settings = settings_for(migrated_sqlite).model_copy(
        update={
            "deployer": "helm",
            "chart_repositories": ["https://charts.example.com/stable"],
        }
    )
    async with running_api(
        settings,
        limits=LIMITS,
        producer=fakes.producer,
        admin=fakes.admin,
        deployer=fakes.deployer,
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("chart", "setting"),
    [
        ("../../tmp", "WSCHED_CHART_ROOTS"),
        ("/etc", "WSCHED_CHART_ROOTS"),
        ("charts/workload-scheduler", "WSCHED_CHART_ROOTS"),
        ("charts/examples/../../services", "WSCHED_CHART_ROOTS"),
        ("https://charts.example.com/stable-evil/echo", "WSCHED_CHART_REPOSITORIES"),
        ("oci://registry.example.com/echo", "WSCHED_CHART_REPOSITORIES"),
    ],
)
async def test_a_chart_outside_the_allow_list_is_422_at_create_and_patch(
    helm_api: Api, chart: str, setting: str
) -> None:
    key = await helm_api.tenant("acme")
    await helm_api.application(key, "a")
    answer = await helm_api.client.post(
        PIPELINES, json={"name": "p", "chart": chart}, headers=bearer(key)
    )
    detail = assert_error(answer, 422, "chart_not_allowed")
    assert setting in detail and str(REPO) not in detail
    allowed = await helm_api.client.post(
        PIPELINES, json={"name": "p", "chart": "charts/examples/echo"}, headers=bearer(key)
    )
    assert allowed.status_code == 201, allowed.text
    patched = await helm_api.client.patch(
        f"{PIPELINES}/p", json={"chart": chart}, headers=bearer(key)
    )
    assert setting in assert_error(patched, 422, "chart_not_allowed")
    shown = await helm_api.client.get(f"{PIPELINES}/p", headers=bearer(key))
    assert shown.json()["chart"] == "charts/examples/echo"


async def test_allowed_sources_are_accepted(helm_api: Api) -> None:
    key = await helm_api.tenant("acme")
    await helm_api.application(key, "a")
    for number, chart in enumerate(
        [
            "charts/examples/ocr",
            str(REPO / "charts/examples/echo"),
            "https://charts.example.com/stable/echo",
        ]
    ):
        answer = await helm_api.client.post(
            PIPELINES, json={"name": f"p{number}", "chart": chart}, headers=bearer(key)
        )
        assert answer.status_code == 201, answer.text


async def test_without_the_helm_deployer_charts_are_not_judged(api: Api) -> None:
    key = await api.tenant("acme")
    await api.application(key, "a")
    answer = await api.client.post(
        PIPELINES, json={"name": "p", "chart": "/etc"}, headers=bearer(key)
    )
    assert answer.status_code == 201, answer.text
