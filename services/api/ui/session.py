"""The dashboard's session: who signed in, sealed in a cookie the browser cannot read.

Stateless on the server (any API replica can check it, nothing to share) but never a bare
signature over readable data: the cookie is a Fernet token (AES-CBC with HMAC-SHA256)
under a key derived from the API's secret key, so its content is confidential and
tamper-proof, and Fernet's own timestamp bounds its age. It names the tenant and keeps
the *digest* of the key signed in with (the same SHA-256 the API stores), never the key:
a session ends when its tenant is gone or its key no longer matches, and an operator
session ends when the operator key changes. The CSRF token lives inside it too, so a
forged request cannot learn it and a stolen token alone does nothing.

Pure: no FastAPI, no store; the clock is injected for tests.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE = "wsched_session"
CSRF_HEADER = "x-csrf-token"
#: Methods that change nothing: they need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Kind = Literal["tenant", "operator"]

#: For every page under /ui: scripts and styles only from this origin (no inline script,
#: no eval), no framing, no plugins, forms and fetches only to this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@dataclass(frozen=True, kw_only=True)
class Session:
    """A signed-in browser: a tenant, or the operator looking at one tenant (``tenant_id``,
    read only) or at none."""

    kind: Kind
    key_digest: str
    csrf: str
    tenant_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"


def session_key(secret: bytes) -> bytes:
    """A Fernet key for sessions only, derived from the API's secret key: the worker
    tokens' cipher and the sessions never share a key."""
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"wsched dashboard session"
    ).derive(secret)
    return base64.urlsafe_b64encode(derived)


class SessionCodec:
    """Seal and open sessions; one that is forged, altered or older than ``ttl_s`` opens
    as None."""

    def __init__(
        self, *, secret: bytes, ttl_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._fernet = Fernet(session_key(secret))
        self._ttl_s = ttl_s
        self._clock = clock

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def seal(self, session: Session) -> str:
        doc = {
            "v": 1,
            "k": session.kind,
            "d": session.key_digest,
            "c": session.csrf,
            "t": session.tenant_id,
        }
        payload = json.dumps(doc, separators=(",", ":")).encode()
        return self._fernet.encrypt_at_time(payload, int(self._clock())).decode()

    def open(self, token: str) -> Session | None:
        try:
            payload = self._fernet.decrypt_at_time(
                token.encode(), ttl=self._ttl_s, current_time=int(self._clock())
            )
        except (InvalidToken, UnicodeEncodeError):
            return None
        return _session_of(payload)


def _session_of(payload: bytes) -> Session | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("k") not in ("tenant", "operator"):
        return None
    tenant = doc.get("t")
    if not isinstance(doc.get("d"), str) or not isinstance(doc.get("c"), str):
        return None
    if tenant is not None and not isinstance(tenant, str):
        return None
    return Session(kind=doc["k"], key_digest=doc["d"], csrf=doc["c"], tenant_id=tenant)


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(session: Session, method: str, header: str | None) -> bool:
    """A state-changing request made with the session's cookie must echo its CSRF token
    (which only pages of this origin can read); reads need none."""
    if method.upper() in SAFE_METHODS:
        return True
    return header is not None and hmac.compare_digest(header.encode(), session.csrf.encode())
