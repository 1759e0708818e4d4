from __future__ import annotations

import re

from services.deploy.naming import RELEASE_MAX, namespace_for, release_name

DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")


def test_short_names_are_kept_whole() -> None:
    assert release_name("acme", "shop", "ocr") == "acme-shop-ocr"
    assert namespace_for("acme") == "wsched-acme"


def test_long_names_are_shortened_with_a_hash_and_stay_apart() -> None:
    a = release_name("t" * 40, "a" * 40, "pipeline-one")
    b = release_name("t" * 40, "a" * 40, "pipeline-two")
    assert len(a) == RELEASE_MAX and len(b) == RELEASE_MAX and a != b
    assert DNS_LABEL.match(a) and DNS_LABEL.match(b)
    assert release_name("t" * 40, "a" * 40, "pipeline-one") == a  # stable


def test_the_longest_namespace_is_a_valid_dns_label() -> None:
    name = namespace_for("t" + "x" * 39)
    assert len(name) <= 63 and DNS_LABEL.match(name)
