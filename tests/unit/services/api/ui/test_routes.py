"""The dashboard through the app: its page and headers, signing in, the session cookie on
the JSON API's routes (CSRF, origin), operator versus tenant scope, and isolation."""

from __future__ import annotations

import re

import httpx

from services.api.ui.session import CONTENT_SECURITY_POLICY, COOKIE, Session, new_csrf
from services.store.control import hash_secret
from tests.unit.services.api.harness import OPERATOR_KEY, Api, assert_error


async def sign_in(api: Api, key: str) -> tuple[dict[str, str], str]:
    """The Cookie header of a new session, and its CSRF token."""
    answer = await api.client.post("/ui/session", json={"key": key})
    assert answer.status_code == 200, answer.text
    return {"Cookie": f"{COOKIE}={answer.cookies[COOKIE]}"}, answer.json()["csrf"]


def with_csrf(cookie: dict[str, str], csrf: str) -> dict[str, str]:
    return {**cookie, "X-CSRF-Token": csrf}


async def test_the_page_is_served_with_a_csp_and_no_inline_script(api: Api) -> None:
    page = await api.client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts
    assert all('src="/ui/static/' in tag for tag in scripts)
    assert not re.search(r"<[^>]*\son[a-z]+=", page.text)  # no inline event handlers
    script = await api.client.get("/ui/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert ".innerHTML" not in script.text
    assert (await api.client.get("/healthz")).headers.get("content-security-policy") is None


async def test_sign_in_sets_an_httponly_samesite_strict_cookie(api: Api) -> None:
    key = await api.tenant("acme")
    answer = await api.client.post("/ui/session", json={"key": key})
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    lowered = cookie.lower()
    for flag in ("httponly", "samesite=strict", "path=/", "max-age="):
        assert flag in lowered, cookie
    assert "secure" not in lowered  # plain HTTP here: see the https test
    assert key not in cookie
    assert key not in answer.text
    body = answer.json()
    assert body["kind"] == "tenant"
    assert body["tenant"]["name"] == "acme"
    assert len(body["csrf"]) >= 32


async def test_the_cookie_is_secure_over_https(api: Api) -> None:
    key = await api.tenant("acme")
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api") as client:
        answer = await client.post("/ui/session", json={"key": key})
    assert "; secure" in answer.headers["set-cookie"].lower()


async def test_bad_sign_ins_are_clear_4xx(api: Api) -> None:
    assert_error(
        await api.client.post("/ui/session", json={"key": "wsk_nope"}), 401, "unauthorized"
    )
    assert_error(await api.client.post("/ui/session", json={}), 422, "invalid_request")
    assert_error(
        await api.client.post("/ui/session", json={"key": "k", "tenant": "x"}),
        422,
        "invalid_request",
    )
    assert_error(await api.client.post("/ui/session", content=b"key=x"), 422, "invalid_request")
    key = await api.tenant("acme")
    foreign = await api.client.post(
        "/ui/session", json={"key": key}, headers={"Origin": "https://evil.example"}
    )
    assert_error(foreign, 403, "csrf_failed")
    same = await api.client.post("/ui/session", json={"key": key}, headers={"Origin": "http://api"})
    assert same.status_code == 200, same.text
    proxied = await api.client.post(
        "/ui/session",
        json={"key": key},
        headers={"Origin": "https://dash.example", "X-Forwarded-Host": "dash.example"},
    )
    assert proxied.status_code == 200, proxied.text


async def test_the_api_routes_take_the_cookie_and_need_csrf_to_change_anything(api: Api) -> None:
    key = await api.tenant("acme")
    cookie, csrf = await sign_in(api, key)
    assert (await api.client.get("/api/applications", headers=cookie)).json() == {
        "applications": []
    }
    missing = await api.client.post("/api/applications", json={"name": "a"}, headers=cookie)
    assert_error(missing, 403, "csrf_failed")
    wrong = {**cookie, "X-CSRF-Token": "x" * 43}
    assert_error(
        await api.client.post("/api/applications", json={"name": "a"}, headers=wrong),
        403,
        "csrf_failed",
    )
    foreign = {**with_csrf(cookie, csrf), "Origin": "https://evil.example"}
    assert_error(
        await api.client.post("/api/applications", json={"name": "a"}, headers=foreign),
        403,
        "csrf_failed",
    )
    assert (await api.client.get("/api/applications", headers=cookie)).json() == {
        "applications": []
    }
    made = await api.client.post(
        "/api/applications", json={"name": "a"}, headers=with_csrf(cookie, csrf)
    )
    assert made.status_code == 201, made.text


async def test_a_bearer_header_wins_over_the_cookie(api: Api) -> None:
    key = await api.tenant("acme")
    cookie, _ = await sign_in(api, key)
    answer = await api.client.get(
        "/api/applications", headers={**cookie, "Authorization": "Bearer wsk_wrong"}
    )
    assert_error(answer, 401, "unauthorized")


async def test_forged_or_stale_sessions_are_401(api: Api) -> None:
    forged = {"Cookie": f"{COOKIE}=gAAAAABnot-a-session"}
    assert_error(await api.client.get("/api/applications", headers=forged), 401, "session_expired")
    assert_error(await api.client.get("/ui/session", headers=forged), 401, "session_expired")
    assert_error(await api.client.get("/ui/session"), 401, "session_expired")
    # A sealed session whose key is no tenant's (deleted tenant, changed key).
    gone = Session(
        kind="tenant", key_digest=hash_secret("wsk_gone"), csrf=new_csrf(), tenant_id="x"
    )
    stale = {"Cookie": f"{COOKIE}={api.ctx.sessions.seal(gone)}"}
    assert_error(await api.client.get("/api/applications", headers=stale), 401, "session_expired")
    # An operator session from before the operator key changed.
    old = Session(kind="operator", key_digest=hash_secret("old-operator"), csrf=new_csrf())
    stale = {"Cookie": f"{COOKIE}={api.ctx.sessions.seal(old)}"}
    assert_error(await api.client.get("/api/tenants", headers=stale), 403, "forbidden")
    assert_error(await api.client.get("/ui/overview", headers=stale), 403, "forbidden")


async def test_a_tenant_session_sees_only_its_own_objects(api: Api) -> None:
    owner, _ = await api.ready_pipeline("p")
    other = await api.tenant("other")
    cookie, _ = await sign_in(api, other)
    assert (await api.client.get("/api/applications", headers=cookie)).json() == {
        "applications": []
    }
    answer = await api.client.get("/api/applications/a/pipelines/p", headers=cookie)
    assert_error(answer, 404, "not_found")
    assert_error(await api.client.get("/ui/overview", headers=cookie), 403, "forbidden")
    assert_error(await api.client.get("/api/tenants", headers=cookie), 403, "forbidden")
    owned, _ = await sign_in(api, owner)
    assert (
        await api.client.get("/api/applications/a/pipelines/p", headers=owned)
    ).status_code == 200


async def test_the_operator_sees_every_tenant_and_one_tenant_read_only(api: Api) -> None:
    await api.ready_pipeline("p")
    await api.ready_pipeline("q")
    cookie, csrf = await sign_in(api, OPERATOR_KEY)
    overview = (await api.client.get("/ui/overview", headers=cookie)).json()
    seen = {(row["tenant"], row["pipeline"]["name"]) for row in overview["pipelines"]}
    assert seen == {("t-p", "p"), ("t-q", "q")}
    assert_error(await api.client.get("/api/applications", headers=cookie), 409, "no_tenant_picked")
    tenants = (await api.client.get("/api/tenants", headers=cookie)).json()["tenants"]
    chosen = next(t["id"] for t in tenants if t["name"] == "t-q")
    unpicked = await api.client.put(
        "/ui/session/tenant", json={"tenant_id": chosen}, headers=cookie
    )
    assert_error(unpicked, 403, "csrf_failed")
    missing = await api.client.put(
        "/ui/session/tenant", json={"tenant_id": "nobody"}, headers=with_csrf(cookie, csrf)
    )
    assert_error(missing, 404, "not_found")
    picked = await api.client.put(
        "/ui/session/tenant", json={"tenant_id": chosen}, headers=with_csrf(cookie, csrf)
    )
    assert picked.status_code == 200, picked.text
    assert picked.json()["tenant"]["name"] == "t-q"
    viewing = {"Cookie": f"{COOKIE}={picked.cookies[COOKIE]}"}
    listed = (await api.client.get("/api/applications/a/pipelines", headers=viewing)).json()
    assert [p["name"] for p in listed["pipelines"]] == ["q"]
    write = await api.client.post(
        "/api/applications", json={"name": "b"}, headers=with_csrf(viewing, csrf)
    )
    assert_error(write, 403, "read_only")


async def test_a_tenant_cannot_pick_another_tenant(api: Api) -> None:
    key = await api.tenant("acme")
    victim = await api.tenant("victim")
    victim_id = (await api.ctx.db(api.store.tenant_by_key, victim)).id  # type: ignore[union-attr]
    cookie, csrf = await sign_in(api, key)
    answer = await api.client.put(
        "/ui/session/tenant", json={"tenant_id": victim_id}, headers=with_csrf(cookie, csrf)
    )
    assert_error(answer, 403, "forbidden")


async def test_sign_out_needs_csrf_and_clears_the_cookie(api: Api) -> None:
    key = await api.tenant("acme")
    cookie, csrf = await sign_in(api, key)
    assert_error(await api.client.delete("/ui/session", headers=cookie), 403, "csrf_failed")
    answer = await api.client.delete("/ui/session", headers=with_csrf(cookie, csrf))
    assert answer.status_code == 204
    assert "max-age=0" in answer.headers["set-cookie"].lower()


async def test_assets_outside_the_static_folder_are_404_without_paths(api: Api) -> None:
    for path in ("/ui/static/missing.js", "/ui/static/..%2f..%2fapp.py", "/ui/static/../auth.py"):
        answer = await api.client.get(path)
        detail = assert_error(answer, 404, "not_found")
        assert "static" not in detail
        assert "services" not in detail
