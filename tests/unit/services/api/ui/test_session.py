"""The session codec: sealed, tamper-proof, expiring; CSRF checked on state changes."""

from __future__ import annotations

from cryptography.fernet import Fernet

from services.api.ui.session import (
    CONTENT_SECURITY_POLICY,
    Session,
    SessionCodec,
    csrf_ok,
    new_csrf,
    session_key,
)

SECRET = Fernet.generate_key()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _session() -> Session:
    return Session(kind="tenant", key_digest="ab" * 32, csrf=new_csrf(), tenant_id="t1")


def test_a_sealed_session_opens_as_itself_and_hides_its_content() -> None:
    codec = SessionCodec(secret=SECRET, ttl_s=60)
    session = _session()
    token = codec.seal(session)
    assert codec.open(token) == session
    assert session.key_digest not in token
    assert session.csrf not in token


def test_an_altered_or_foreign_token_does_not_open() -> None:
    codec = SessionCodec(secret=SECRET, ttl_s=60)
    token = codec.seal(_session())
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    assert codec.open(flipped) is None
    other = SessionCodec(secret=Fernet.generate_key(), ttl_s=60)
    assert other.open(token) is None
    assert codec.open("") is None
    assert codec.open("not a token é") is None


def test_a_session_expires_after_its_ttl() -> None:
    clock = Clock()
    codec = SessionCodec(secret=SECRET, ttl_s=60, clock=clock)
    token = codec.seal(_session())
    clock.now += 59
    assert codec.open(token) is not None
    clock.now += 2
    assert codec.open(token) is None


def test_the_session_key_is_not_the_secret_key_itself() -> None:
    assert session_key(SECRET) != SECRET
    assert session_key(SECRET) == session_key(SECRET)


def test_csrf_is_needed_for_every_state_change_and_compared_whole() -> None:
    session = _session()
    for method in ("GET", "HEAD", "OPTIONS"):
        assert csrf_ok(session, method, None)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert csrf_ok(session, method, session.csrf)
        assert not csrf_ok(session, method, None)
        assert not csrf_ok(session, method, "")
        assert not csrf_ok(session, method, session.csrf[:-1])


def test_the_csp_allows_no_inline_script_and_no_framing() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'none'"
