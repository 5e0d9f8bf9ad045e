"""The UI inside ``tvc server``: login with a token into an HttpOnly SameSite=Strict cookie,
read-only tokens see no action, models a token may not read are invisible (404), actions are
recorded under the token's name, and clients without a browser get tvc's JSON errors."""

from __future__ import annotations

import httpx

import tvc


def login(tab, url: str, secret: str, target: str = "/ui/") -> None:
    tab.open(url + target)
    assert "/ui/login" in tab.page.url
    tab.page.fill("input[name=token]", secret)
    tab.page.click("form button[type=submit]")
    tab.page.wait_for_url(url + target)


def test_login_sets_a_strict_httponly_cookie_and_a_wrong_token_is_refused(tab, server_ui):
    url = server_ui["url"]
    tab.open(url + "/ui/m/mlp-ft")
    assert tab.page.url.startswith(url + "/ui/login?next=")
    tab.page.fill("input[name=token]", "tvc_wrong")
    tab.page.click("form button[type=submit]")
    tab.page.wait_for_selector(".flash.err")
    tab.shot("login-refused")
    assert "invalid, expired or revoked token" in tab.page.locator(".flash.err").inner_text()
    tab.page.fill("input[name=token]", server_ui["tokens"]["reader"])
    tab.page.click("form button[type=submit]")
    tab.page.wait_for_url(url + "/ui/m/mlp-ft")  # back where it was going
    (cookie,) = tab.page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] == server_ui["tokens"]["reader"]
    tab.page.click(".who button")  # log out
    tab.page.wait_for_url("**/ui/login")
    assert tab.page.context.cookies() == []


def test_a_read_only_token_sees_no_action_and_may_not_post(tab, server_ui):
    url = server_ui["url"]
    login(tab, url, server_ui["tokens"]["reader"], "/ui/v/mlp-ft@v4")
    tab.shot("server-read-only")
    assert "read-only" in tab.page.locator(".who").inner_text()
    assert tab.page.locator("form[action^='/ui/actions/']").count() == 0
    tab.open(url + "/ui/m/mlp-ft")
    assert tab.page.locator("form[action^='/ui/actions/']").count() == 0
    form = {"ref": "mlp-ft@v4", "key": "x", "value": "1", "csrf": ""}
    resp = tab.page.context.request.post(url + "/ui/actions/metric", form=form)
    assert resp.status == 403
    reg = tvc.Registry(server_ui["data"])
    assert "x" not in reg.resolve("mlp-ft@v4").metrics
    reg.close()


def test_a_token_of_one_model_never_sees_another(tab, server_ui):
    url = server_ui["url"]
    login(tab, url, server_ui["tokens"]["base-only"])
    tab.shot("server-one-model")
    assert tab.page.locator("#models tbody td:first-child").all_inner_texts() == ["mlp-base"]
    for path in ("/ui/m/mlp-ft", "/ui/v/mlp-ft@v1", "/ui/compare?a=mlp-base@v1&b=mlp-ft@v1"):
        assert tab.open(url + path).status == 404, path
        assert "mlp-ft" in tab.page.locator(".flash.err").inner_text()
    tab.open(url + "/ui/?q=state+%3D+created")
    assert {
        c.split("@")[0] for c in tab.page.locator("#results td:first-child").all_inner_texts()
    } == {"mlp-base"}
    tab.open(url + "/ui/audit")
    assert "mlp-ft" not in tab.page.locator("main").inner_text()
    # its write scope does not reach the other model either
    tab.open(url + "/ui/v/mlp-base@v2")
    token = tab.page.locator("#add-metric input[name=csrf]").input_value()
    form = {"ref": "mlp-ft@v4", "key": "x", "value": "1", "csrf": token}
    resp = tab.page.context.request.post(url + "/ui/actions/metric", form=form)
    assert resp.status == 404


def test_a_writer_acts_under_the_tokens_name(tab, server_ui):
    url = server_ui["url"]
    login(tab, url, server_ui["tokens"]["writer"], "/ui/v/mlp-base@v1")
    tab.page.fill("#add-metric input[name=key]", "robust_acc")
    tab.page.fill("#add-metric input[name=value]", "0.71")
    tab.page.click("#add-metric button")
    tab.page.wait_for_selector("p.flash.ok")
    tab.shot("server-writer")
    reg = tvc.Registry(server_ui["data"])
    event = reg.metric_history("mlp-base@v1")[-1]
    reg.close()
    assert (event.actor, event.metrics) == ("writer", {"robust_acc": 0.71})
    # a page of another site cannot act with the cookie (Origin checked besides the CSRF value)
    token = tab.page.locator("#add-metric input[name=csrf]").input_value()
    form = {"ref": "mlp-base@v1", "key": "evil", "value": "1", "csrf": token}
    resp = tab.page.context.request.post(
        url + "/ui/actions/metric", form=form, headers={"Origin": "http://evil.example"}
    )
    assert resp.status == 403


def test_clients_without_a_browser_get_json_errors(server_ui):
    url = server_ui["url"]
    resp = httpx.get(url + "/ui/")
    assert resp.status_code == 401 and resp.json()["exit_code"] == 12
    head = {"Authorization": f"Bearer {server_ui['tokens']['base-only']}"}
    assert httpx.get(url + "/ui/m/mlp-ft", headers=head).status_code == 404
    assert httpx.get(url + "/ui/m/mlp-base", headers=head).status_code == 200
    got = httpx.post(
        url + "/ui/actions/metric",
        json={"ref": "mlp-base@v2", "key": "k", "value": "2"},
        headers=head,
    )
    assert got.status_code == 200 and got.json()["ok"]
    assert httpx.get(url + "/", follow_redirects=False).headers["location"] == "/ui/"
