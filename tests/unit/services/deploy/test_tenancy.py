"""The objects a tenant namespace gets, as far as they are pure: the NetworkPolicy and
the comparison that keeps re-deploys from rewriting unchanged objects."""

from __future__ import annotations

from services.deploy.tenancy import TenantPolicy, _matches, network_policy


def test_the_network_policy_allows_the_scheduler_and_dns_and_what_the_operator_adds() -> None:
    web = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}
    policy = TenantPolicy(
        scheduler_namespace="wsched",
        scheduler_pod_labels={"app.kubernetes.io/component": "scheduler"},
        scheduler_port=7000,
        extra_egress=(web,),
    )
    spec = network_policy("acme", policy)["spec"]
    assert spec["podSelector"] == {} and spec["ingress"] == []
    scheduler, dns, added = spec["egress"]
    assert scheduler == {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "wsched"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "scheduler"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 7000}],
    }
    assert dns["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    assert added == web
    # Without the scheduler's namespace: its pods so labelled in any namespace.
    anywhere = network_policy("acme", TenantPolicy())["spec"]["egress"][0]["to"][0]
    assert anywhere["namespaceSelector"] == {}


def test_pod_security_overrides_are_per_tenant() -> None:
    policy = TenantPolicy(pod_security_overrides={"trusted": "baseline"})
    assert policy.pod_security_for("trusted") == "baseline"
    assert policy.pod_security_for("acme") == "restricted"
    assert policy.user("wsched-acme") == "system:serviceaccount:wsched-acme:wsched-tenant"


def test_what_the_server_adds_does_not_count_as_a_difference() -> None:
    wanted = {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "5"}}, "ingress": []}
    served = {
        "metadata": {"name": "q", "uid": "u", "resourceVersion": "1"},
        "spec": {"hard": {"pods": "5"}, "scopes": None},
    }
    assert _matches(wanted, served)
    assert not _matches(wanted, {**served, "spec": {"hard": {"pods": "6"}}})
    assert not _matches({"a": [1, 2]}, {"a": [1]})
