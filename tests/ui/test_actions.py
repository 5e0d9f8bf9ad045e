"""The UI's actions, clicked in a real browser: each goes through the registry's own function
(gates enforced, refusals shown with their reason) and is recorded as the user who clicked."""

from __future__ import annotations

import contextlib

import tvc
from ui_helpers import copy_registry, running_ui


@contextlib.contextmanager
def opened(data):
    reg = tvc.Registry(data)
    try:
        yield reg
    finally:
        reg.close()


def flash(tab) -> str:
    return tab.page.locator("p.flash").inner_text()


def test_every_action_changes_the_registry_as_the_user(tab, finetuned, tmp_path):
    data = copy_registry(finetuned, tmp_path / "reg")
    with running_ui(data, author="ui-user") as (url, _proc):
        # a gate refuses, and the page says why; nothing changes
        tab.open(url + "/ui/m/mlp-ft")
        tab.page.fill("#move-alias input[name=alias]", "production")
        tab.page.fill("#move-alias input[name=ref]", "v2")
        tab.page.click("#move-alias button")
        tab.page.wait_for_selector("p.flash.err")
        tab.shot("action-refused")
        assert "gate 'production' refuses mlp-ft@v2" in flash(tab)
        assert "eval_acc = 0.88" in flash(tab)
        with opened(data) as reg:
            assert "production" not in {a["alias"] for a in reg.aliases("mlp-ft")}
        tab.page.fill("#move-alias input[name=alias]", "production")
        tab.page.fill("#move-alias input[name=ref]", "v99")  # a typo: shown, not a 404 page
        tab.page.click("#move-alias button")
        tab.page.wait_for_selector("p.flash.err")
        assert "v99" in flash(tab) and tab.page.url.endswith("/ui/m/mlp-ft")

        # a metric added later, then the alias passes its gate
        tab.open(url + "/ui/v/mlp-ft@v4")
        tab.page.fill("#add-metric input[name=key]", "eval_acc")
        tab.page.fill("#add-metric input[name=value]", "0.93")
        tab.page.click("#add-metric button")
        tab.page.wait_for_selector("p.flash.ok")
        with opened(data) as reg:
            assert reg.resolve("mlp-ft@v4").metrics["eval_acc"] == 0.93
            assert reg.metric_history("mlp-ft@v4")[-1].actor == "ui-user"
        tab.page.fill("#set-alias input[name=alias]", "production")
        tab.page.fill("#set-alias input[name=reason]", "passed eval")
        tab.page.click("#set-alias button")
        tab.page.wait_for_selector("p.flash.ok")
        with opened(data) as reg:
            assert reg.resolve("mlp-ft@production").number == 4
            move = reg.alias_history("mlp-ft", "production")[-1]
            assert (move.actor, move.reason) == ("ui-user", "passed eval")

        # a lifecycle transition: the form offers only the legal next states
        options = tab.page.locator("#transition select option").all_inner_texts()
        with opened(data) as reg:
            assert options == list(reg.lifecycle_machine().allowed("training"))
        tab.page.select_option("#transition select", "trained")
        tab.page.click("#transition button")
        tab.page.wait_for_selector("p.flash.ok")
        assert "training → trained" in flash(tab)
        with opened(data) as reg:
            assert reg.resolve("mlp-ft@v4").state == "trained"
            assert reg.state_history("mlp-ft@v4")[-1].actor == "ui-user"

        # a rollback: staging goes back from v4 to v2
        tab.open(url + "/ui/m/mlp-ft")
        tab.page.click("button[data-action=rollback-staging]")
        tab.page.wait_for_selector("p.flash.ok")
        tab.shot("action-done")
        with opened(data) as reg:
            assert reg.resolve("mlp-ft@staging").number == 2
            back = reg.alias_history("mlp-ft", "staging")[-1]
            assert back.rollback and back.actor == "ui-user"
        # the flash is shown once
        tab.open(url + "/ui/m/mlp-ft")
        assert tab.page.locator("p.flash").count() == 0
        # the audit page lists the four actions under the user's name
        tab.open(url + "/ui/audit?actor=ui-user", "audit-after-actions")
        assert tab.page.locator("#audit-entries tbody tr").count() == 4


def test_a_post_without_the_forms_csrf_value_changes_nothing(finetuned, tmp_path, browser):
    data = copy_registry(finetuned, tmp_path / "reg")
    with running_ui(data) as (url, _proc):
        ctx = browser.new_context()
        api = ctx.request
        form = {"ref": "mlp-ft@v4", "key": "x", "value": "1", "back": "/ui/"}
        resp = api.post(url + "/ui/actions/metric", form=form)
        assert resp.status == 403
        resp = api.post(url + "/ui/actions/metric", form={**form, "csrf": "0" * 64})
        assert resp.status == 403
        ctx.close()
        with opened(data) as reg:
            assert "x" not in reg.resolve("mlp-ft@v4").metrics
