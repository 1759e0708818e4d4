from __future__ import annotations

from services.infra.gobuild import GoCommand, parse_replaces, wrapper_gomod

UPSTREAM = """module example.com/upstream

go 1.24.2

require (
\texample.com/a v1.0.0
)

replace (
\t// a comment line
\texample.com/fork => github.com/someone/fork v1.2.3 // trailing comment
\tk8s.io/api => ./staging/src/k8s.io/api
)

replace example.com/single v1.0.0 => example.com/single v1.0.1
"""


def _cmd(local_version: str | None) -> GoCommand:
    return GoCommand(
        name="tool",
        module="example.com/upstream",
        version="v1.0.0",
        package="example.com/upstream/cmd/tool",
        local_version=local_version,
        extra_replaces=(("example.com/extra", "example.com/extra v0.0.1"),),
    )


def test_parse_replaces_reads_blocks_single_lines_and_skips_comments() -> None:
    assert parse_replaces(UPSTREAM) == [
        ("example.com/fork", "github.com/someone/fork v1.2.3"),
        ("k8s.io/api", "./staging/src/k8s.io/api"),
        ("example.com/single v1.0.0", "example.com/single v1.0.1"),
    ]


def test_wrapper_maps_local_replaces_to_the_published_version() -> None:
    gomod = wrapper_gomod(_cmd("v0.34.3"), UPSTREAM)
    assert "go 1.24.2" in gomod
    assert "\tk8s.io/api => k8s.io/api v0.34.3\n" in gomod
    assert "\texample.com/fork => github.com/someone/fork v1.2.3\n" in gomod
    assert "\texample.com/single v1.0.0 => example.com/single v1.0.1\n" in gomod
    assert "\texample.com/extra => example.com/extra v0.0.1\n" in gomod
    assert "./staging" not in gomod


def test_wrapper_drops_local_replaces_without_a_version() -> None:
    gomod = wrapper_gomod(_cmd(None), UPSTREAM)
    assert "k8s.io/api" not in gomod
    assert "github.com/someone/fork" in gomod


def test_fingerprint_changes_with_the_pin() -> None:
    assert _cmd("v0.34.3").fingerprint != _cmd("v0.34.4").fingerprint
    assert _cmd("v0.34.3").fingerprint == _cmd("v0.34.3").fingerprint
