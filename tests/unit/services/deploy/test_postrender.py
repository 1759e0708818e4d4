"""The post-renderer refuses what a tenant's chart may not create, naming the object."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.deploy import postrender
from services.deploy.helm._admission import pods_of
from services.deploy.postrender import DEFAULT_KINDS, Policy, refusals

POLICY = Policy(
    namespace="wsched-t", kinds=frozenset(DEFAULT_KINDS), deployer_account="wsched-tenant"
)


def obj(kind: str, name: str = "x", api: str = "v1", **fields: Any) -> dict[str, Any]:
    metadata = {"name": name, **fields.pop("metadata", {})}
    return {"apiVersion": api, "kind": kind, "metadata": metadata, **fields}


def deployment(**pod: Any) -> dict[str, Any]:
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}], **pod}}
    return obj("Deployment", "w", "apps/v1", spec={"template": template})


def test_what_pipeline_lib_renders_passes() -> None:
    documents = [
        obj("ConfigMap"),
        obj("Secret", type="Opaque"),
        deployment(automountServiceAccountToken=False),
        obj("ScaledObject", api="keda.sh/v1alpha1"),
        obj("Service", spec={"type": "ClusterIP"}),
        obj("ServiceAccount", automountServiceAccountToken=False),
        obj("ConfigMap", metadata={"namespace": "wsched-t"}),
        None,
    ]
    assert refusals(documents, POLICY) == []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            obj("ClusterRole", api="rbac.authorization.k8s.io/v1"),
            "ClusterRole 'x' is cluster-scoped",
        ),
        (obj("Namespace"), "Namespace 'x' is cluster-scoped"),
        (
            obj("Role", api="rbac.authorization.k8s.io/v1"),
            "kind rbac.authorization.k8s.io/Role is not one",
        ),
        (obj("Pod"), "kind Pod is not one"),
        (obj("Deployment", api="evil.io/v1"), "kind evil.io/Deployment is not one"),
        (obj("List", items=[]), "kind List is not one"),
        (obj("ConfigMap", metadata={"namespace": "kube-system"}), "is in namespace 'kube-system'"),
        (obj("ServiceAccount"), "must set automountServiceAccountToken: false"),
        (obj("ServiceAccount", automountServiceAccountToken=True), "automountServiceAccountToken"),
        (obj("ServiceAccount", "wsched-tenant", automountServiceAccountToken=False), "reserved"),
        (obj("Secret", type="kubernetes.io/service-account-token"), "service-account token"),
        (obj("Service", spec={"type": "NodePort"}), "type NodePort"),
        (obj("Service", spec={"type": "ExternalName"}), "type ExternalName"),
        (obj("Service", spec={"externalIPs": ["1.2.3.4"]}), "externalIPs"),
        (deployment(serviceAccountName="wsched-tenant"), "runs its pods as 'wsched-tenant'"),
        ("just text", "not a Kubernetes object"),
    ],
)
def test_refused_with_the_object_named(document: Any, expected: str) -> None:
    found = refusals([obj("ConfigMap"), document], POLICY)
    assert len(found) == 1 and expected in found[0], found


def test_the_operator_may_allow_more_kinds_but_never_cluster_scoped_ones() -> None:
    wider = Policy(
        namespace="n",
        kinds=frozenset({"batch/Job", "rbac.authorization.k8s.io/ClusterRole"}),
        deployer_account="d",
    )
    assert refusals([obj("Job", api="batch/v1")], wider) == []
    assert (
        "cluster-scoped"
        in refusals([obj("ClusterRole", api="rbac.authorization.k8s.io/v1")], wider)[0]
    )


def test_pod_templates_of_cron_jobs_are_found() -> None:
    pod: dict[str, Any] = {"spec": {"containers": []}}
    cron = obj("CronJob", api="batch/v1", spec={"jobTemplate": {"spec": {"template": pod}}})
    assert postrender.pod_templates(cron) == [pod]


def run(monkeypatch: pytest.MonkeyPatch, text: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    code = postrender.main(["--namespace", "wsched-t", "--deployer-account", "sa", *args])
    return code, out.getvalue(), err.getvalue()


def test_main_passes_allowed_manifests_through_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "---\n# Source: x\n" + yaml.safe_dump(obj("ConfigMap"))
    assert run(monkeypatch, text) == (0, text, "")


def test_main_exits_1_with_one_line_per_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    text = yaml.safe_dump_all([obj("Namespace"), obj("ConfigMap")])
    code, out, err = run(monkeypatch, text, "--kind=Secret")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith(postrender.PREFIX) and "Namespace 'x' is cluster-scoped" in lines[0]
    assert "kind ConfigMap is not one" in lines[1] and "WSCHED_TENANT_KINDS" in lines[1]
    assert run(monkeypatch, "a: [")[0] == 1


def test_the_bundled_charts_render_nothing_it_refuses() -> None:
    """pipeline-lib's kinds are the default list (the rendering itself is tested with
    helm in tests/integration/charts)."""
    repo = Path(__file__).resolve().parents[4]
    templates = (repo / "charts" / "pipeline-lib" / "templates").glob("_*.tpl")
    kinds = {
        line.split(":", 1)[1].strip()
        for t in templates
        for line in t.read_text().splitlines()
        if line.startswith("kind:")
    }
    assert kinds <= {kind.rpartition("/")[2] for kind in DEFAULT_KINDS}, kinds


def test_the_dry_run_pods_are_built_from_every_pod_template() -> None:
    manifest = yaml.safe_dump_all(
        [
            obj("ConfigMap"),
            deployment(serviceAccountName="own", automountServiceAccountToken=False),
            obj(
                "CronJob",
                "nightly",
                "batch/v1",
                spec={"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
            ),
        ]
    )
    found = list(pods_of(manifest))
    assert [what for what, _ in found] == ["apps/Deployment 'w'", "batch/CronJob 'nightly'"]
    pod = found[0][1]
    assert pod["kind"] == "Pod" and pod["metadata"]["labels"] == {"a": "b"}
    # Its account does not exist before the install; Pod Security does not look at it.
    assert "serviceAccountName" not in pod["spec"]
    assert pod["spec"]["automountServiceAccountToken"] is False
