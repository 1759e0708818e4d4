"""The helm v3 binary, built from its Go module and cached."""

from __future__ import annotations

from pathlib import Path

from services.infra.cache import Cache
from services.infra.gobuild import GoCommand, build

#: v3.19 is the helm line built against the same client-go minor (0.34) as our
#: kube-apiserver (1.34), so helm's version-skew window is centred on the test server.
HELM_VERSION = "v3.19.5"

#: The flags helm's own Makefile sets: without them `helm version` reports "v3.19", and
#: `helm template`/`helm lint` assume Kubernetes 1.20 for `.Capabilities` and API
#: deprecation checks instead of the 1.34 that its client-go (v0.34) speaks.
_LDFLAGS = " ".join(
    [
        "-s -w",
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34",
    ]
)

HELM = GoCommand(
    name="helm",
    module="helm.sh/helm/v3",
    version=HELM_VERSION,
    package="helm.sh/helm/v3/cmd/helm",
    ldflags=_LDFLAGS,
    # A static binary does not depend on the build host's libc.
    env={"CGO_ENABLED": "0"},
)


def provision(cache: Cache) -> Path:
    """Path of the pinned helm binary, built on first use."""
    return build(HELM, cache)
