"""What a tenant reads of a failure holds no path or address of the API's machine."""

from __future__ import annotations

from pathlib import Path

from services.deploy.helm._scrub import scrubbed


def test_paths_and_addresses_are_taken_out() -> None:
    message = (
        "error while running command /usr/local/bin/python3. error output: x; "
        'Get "https://10.0.0.1:443/version": dial tcp [fd00::1]:443: refused; '
        "open /root/.kube/config: denied"
    )
    out = scrubbed(message)
    assert "/usr" not in out and "10.0.0.1" not in out and "fd00" not in out and "/root" not in out
    assert "<path>" in out and "<address>" in out


def test_known_directories_become_what_the_tenant_knows() -> None:
    base = Path("/srv/api")
    out = scrubbed(
        "cannot load /srv/api/charts/examples/echo/Chart.yaml or /srv/data/helm/charts/ab/echo",
        known=[(base, "."), (Path("/srv/data/helm/charts"), "<prepared chart>")],
    )
    assert out == "cannot load ./charts/examples/echo/Chart.yaml or <prepared chart>/ab/echo"


def test_urls_and_the_tenants_own_chart_stay() -> None:
    message = "chart '/etc' failed; fetching https://charts.example.com/stable/index.yaml"
    assert scrubbed(message, keep=["/etc"]) == message
    # A chart named like an address shields nothing.
    assert scrubbed("10.0.0.5:443 refused", keep=["10."]) == "<address> refused"
