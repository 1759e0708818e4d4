"""Shared fixtures. Real components are provisioned once (cached) and started per session.

No fixture here ever skips: a component that cannot be provisioned fails the run, in CI
(``CI=true``) and on a developer's machine alike.
"""

from __future__ import annotations

import pytest

from services.infra.cache import Cache
from services.settings import Settings

# The shared contract cases assert outside test modules; rewrite them for useful failures.
pytest.register_assert_rewrite("tests.ports")

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.database",
    "tests.fixtures.kube",
]


@pytest.fixture(scope="session")
def infra_cache() -> Cache:
    return Cache(root=Settings().cache_dir)
