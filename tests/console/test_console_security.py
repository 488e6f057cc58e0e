"""Session fixation, CSRF, expiry and revocation of console sessions (plain HTTP, no browser)."""

from __future__ import annotations

import re
import uuid

import httpx

from tests.console.conftest import ConsoleGateway

LOGIN_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')
PAGE_TOKEN = re.compile(r'data-csrf="([^"]+)"')


def _login(c: httpx.Client, key: str) -> httpx.Response:
    token = LOGIN_TOKEN.search(c.get("/console/login").text).group(1)  # type: ignore[union-attr]
    return c.post("/console/login", data={"key": key, "csrf": token, "next": "/console"})


def _csrf(c: httpx.Client) -> str:
    return PAGE_TOKEN.search(c.get("/console/teams").text).group(1)  # type: ignore[union-attr]


def _teams(gw: ConsoleGateway) -> list[str]:
    with gw.admin() as a:
        return [t["name"] for t in a.get("/admin/teams").json()["data"]]


def test_session_fixation_a_planted_session_id_is_never_adopted(console_gateway: ConsoleGateway
                                                                ) -> None:
    gw = console_gateway
    with httpx.Client(base_url=gw.url, timeout=20) as victim:
        planted = "attacker-chosen-session-id-" + uuid.uuid4().hex
        victim.cookies.set("lg_console", planted, path="/console")
        r = _login(victim, gw.master)
        assert r.status_code == 303
        issued = r.cookies.get("lg_console")
        assert issued and issued != planted
        assert victim.get("/console").status_code == 200
    with httpx.Client(base_url=gw.url, timeout=20) as attacker:
        attacker.cookies.set("lg_console", planted, path="/console")
        r = attacker.get("/console")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")


def test_signing_in_again_ends_the_session_the_browser_had(console_gateway: ConsoleGateway) -> None:
    gw = console_gateway
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        first = _login(c, gw.master).cookies.get("lg_console")
        assert first
        with httpx.Client(base_url=gw.url, timeout=20) as fresh:  # a sign-in form
            token = LOGIN_TOKEN.search(fresh.get("/console/login").text).group(1)  # type: ignore[union-attr]
            pre = fresh.cookies.get("lg_console_pre")
        c.cookies.set("lg_console_pre", pre or "", path="/console")
        second = c.post("/console/login", data={"key": gw.master, "csrf": token}
                        ).cookies.get("lg_console")
        assert second and second != first
    with httpx.Client(base_url=gw.url, timeout=20) as old:
        old.cookies.set("lg_console", first, path="/console")
        assert old.get("/console").status_code == 303  # the earlier id is dead


def test_csrf_forms_without_the_token_change_nothing(console_gateway: ConsoleGateway) -> None:
    gw = console_gateway
    name = "csrf-" + uuid.uuid4().hex[:6]
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        _login(c, gw.master)
        for data in ({"name": name}, {"name": name, "csrf": "forged"},
                     {"name": name, "csrf": ""}):
            r = c.post("/console/teams", data=data)
            assert r.status_code == 403, data
            assert "CSRF" in r.text
        assert name not in _teams(gw)
        # a JSON body (what a cross-site fetch could send) is not a form: refused too
        r = c.post("/console/teams", json={"name": name, "csrf": _csrf(c)})
        assert r.status_code in (400, 403)
        assert name not in _teams(gw)
        # the token of another session does not work either
        with httpx.Client(base_url=gw.url, timeout=20) as other:
            _login(other, gw.master)
            foreign = _csrf(other)
        r = c.post("/console/teams", data={"name": name, "csrf": foreign})
        assert r.status_code == 403
        assert name not in _teams(gw)
        ok = c.post("/console/teams", data={"name": name, "csrf": _csrf(c)})
        assert ok.status_code == 303
        assert name in _teams(gw)
    with gw.admin() as a:
        audit = a.get("/admin/audit", params={"action": "team.create"}).json()["data"]
    assert any(x["changes"].get("name") == name and x["changes"].get("via") == "console"
               for x in audit)


def test_sign_in_form_needs_its_own_token(console_gateway: ConsoleGateway) -> None:
    gw = console_gateway
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        r = c.post("/console/login", data={"key": gw.master, "csrf": "made-up"})
        assert r.status_code == 403 and "lg_console=" not in r.headers.get("set-cookie", "")
        bad = _login(c, "lg-not-a-real-key")
        assert bad.status_code == 401 and "not accepted" in bad.text
        assert "lg-not-a-real-key" not in bad.text  # a key never goes back into a page


def test_revoking_a_team_key_ends_its_console_sessions(console_gateway: ConsoleGateway) -> None:
    gw = console_gateway
    _team, key = gw.new_team_key()
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        assert _login(c, key).status_code == 303
        assert c.get("/console").status_code == 200
        with gw.admin() as a:
            key_id = next(k["id"] for k in a.get("/admin/keys").json()["data"]
                          if k["key_prefix"] == key[:10])
            assert a.post(f"/admin/keys/{key_id}/revoke").status_code == 200
        assert c.get("/console").status_code == 303


def test_open_redirect_after_sign_in_is_refused(console_gateway: ConsoleGateway) -> None:
    gw = console_gateway
    for target in ("https://evil.example/", "//evil.example/x", "/console//evil.example"):
        with httpx.Client(base_url=gw.url, timeout=20) as c:
            token = LOGIN_TOKEN.search(c.get("/console/login").text).group(1)  # type: ignore[union-attr]
            r = c.post("/console/login", data={"key": gw.master, "csrf": token, "next": target})
            assert r.status_code == 303 and r.headers["location"] == "/console", target
