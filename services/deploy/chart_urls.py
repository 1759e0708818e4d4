"""Chart locations as URLs, reduced to what an allow-list compares: scheme, host, port
and whole path segments. Pure and light, so the settings can check the operator's list
at start (``WSCHED_CHART_REPOSITORIES``) with the same rules the API applies to charts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

URL_SCHEMES = ("https", "http", "oci")


@dataclass(frozen=True, kw_only=True)
class Location:
    """A URL reduced to what is compared: scheme, host, port and path segments."""

    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]

    def within(self, allowed: Location) -> bool:
        return (self.scheme, self.host, self.port) == (
            allowed.scheme,
            allowed.host,
            allowed.port,
        ) and self.segments[: len(allowed.segments)] == allowed.segments


def parse_location(url: str) -> Location:
    """``url`` as a :class:`Location`; ValueError when it is not a plain location
    (credentials, a query, a fragment, ``.``/``..`` or encoded separators in the path)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ValueError(f"the scheme must be one of {', '.join(URL_SCHEMES)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not accepted")
    if parts.query or parts.fragment:
        raise ValueError("a query or fragment is not accepted")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("the URL has no host")
    port = parts.port  # raises ValueError for a bad port
    segments = tuple(_segments(parts.path))
    return Location(scheme=scheme, host=host, port=port, segments=segments)


def _segments(path: str) -> Iterator[str]:
    for raw in path.split("/"):
        if not raw:
            continue
        segment = unquote(raw)
        if segment in (".", "..") or "/" in segment or "\\" in segment:
            raise ValueError("the path may not hold '.', '..' or encoded separators")
        yield segment
