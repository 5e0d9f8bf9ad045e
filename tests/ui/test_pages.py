"""Every page of ``tvc ui`` in a real browser over a registry of real fine-tunes: what it shows
is what the CLI's ``--json`` says, it loads nothing from outside loopback, it reads without
JavaScript, and it has a screenshot (light and dark) under the test's tmp dir."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tvc import errors
from tvc.ui.web import value


def cli(data, *args):
    out = subprocess.run(
        [sys.executable, "-m", "tvc", "-R", str(data), *args, "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={"TVC_DAEMON": "0", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout)


def texts(tab, selector: str) -> list[str]:
    return [t.strip() for t in tab.page.locator(selector).all_inner_texts()]


def test_models_page_lists_every_model_as_ls_does(tab, local_ui, finetuned):
    tab.open(local_ui + "/", "models")
    assert tab.page.url == local_ui + "/ui/"  # / redirects to the UI
    models = {m["model"]: m for m in cli(finetuned, "ls")}
    rows = tab.page.locator("#models tbody tr")
    assert rows.count() == len(models)
    for i in range(rows.count()):
        cells = texts(tab, f"#models tbody tr:nth-child({i + 1}) td")
        m = models[cells[0]]
        assert int(cells[1]) == m["versions"]
        assert cells[2] == m["latest"]
    assert "staging → v4" in tab.page.locator("#models").inner_text()


def test_search_shows_results_and_a_syntax_error_with_its_caret(tab, local_ui, finetuned):
    query = "metrics.eval_acc >= 0.5 or params.layers = 'head'"
    tab.open(local_ui + "/ui/")
    tab.page.fill("form.search input[name=q]", query)
    tab.page.press("form.search input[name=q]", "Enter")
    tab.page.wait_for_selector("#results")
    tab.shot("search")
    want = [v["ref"] for v in cli(finetuned, "search", query)]
    assert [c.split()[0] for c in texts(tab, "#results tbody td:first-child")] == want
    tab.open(local_ui + "/ui/?q=metrics.acc+%3E%3D+and", "search-error")
    shown = tab.page.locator(".query-error").inner_text()
    bad = subprocess.run(
        [sys.executable, "-m", "tvc", "-R", str(finetuned), "search", "metrics.acc >= and"],
        capture_output=True,
        text=True,
        env={"TVC_DAEMON": "0", "PATH": "/usr/bin:/bin"},
    )
    caret = bad.stderr.splitlines()[1:]  # the CLI's query and caret lines
    assert caret and all(line.strip() in shown for line in caret)
    assert "^" in tab.page.locator("pre.caret").inner_text()


def test_model_page_history_graph_and_metric_chart(tab, local_ui, finetuned):
    tab.open(local_ui + "/ui/m/mlp-ft?metric=acc&metric=loss", "model")
    every = {v["version"]: v for v in cli(finetuned, "search", "", "--model", "mlp-ft")}
    rows = tab.page.locator("#versions tbody tr")
    assert rows.count() == len(every) == 5
    for i in range(rows.count()):
        row = rows.nth(i)
        n = int(row.get_attribute("data-version")[1:])
        v = every[n]
        text = row.inner_text()
        assert v["state"] in text and v["author"] in text
        assert value(v["metrics"]["acc"]) in text
    # the merge has two parents: two lanes, a merge node; two charts, a point per version
    assert tab.page.locator("svg.vgraph circle.merge").count() == 1
    assert tab.page.locator("figure.plot").count() == 2
    points = tab.page.locator("figure.plot:first-of-type svg a")
    assert points.count() == 5
    points.first.click()
    tab.page.wait_for_url("**/ui/v/mlp-ft@v1")


def test_version_page_matches_show_ls_and_blame(tab, local_ui, finetuned):
    tab.open(local_ui + "/ui/v/mlp-ft@v2", "version")
    shown = cli(finetuned, "show", "mlp-ft@v2")
    for k, x in shown["metrics"].items():  # the numbers, not our formatting of them
        cell = float(tab.page.locator(f'[data-metric="{k}"]').inner_text())
        assert cell == pytest.approx(x, rel=1e-6), k
    assert "added" in tab.page.locator("#metrics").inner_text()  # eval_acc came later
    assert tab.page.locator("#version-id").inner_text() == shown["id"]
    assert "mlp-ft@v1" in tab.page.locator("dl.facts").inner_text()  # the parent
    assert shown["code"]["commit"][:12] in tab.page.locator("dl.facts").inner_text()
    files = {f["path"]: f for f in cli(finetuned, "ls", "mlp-ft@v2")["files"]}
    assert sorted(texts(tab, "#files tbody td:first-child")) == sorted(files)
    names = [t["name"] for t in cli(finetuned, "blame", "mlp-ft@v2")["tensors"]]
    assert sorted(texts(tab, "#tensors tbody td:first-child")) == sorted(names)
    same = {t["name"]: t for t in cli(finetuned, "diff", "mlp-ft@v2", "mlp-ft@v2")["tensors"]}
    for row in tab.page.locator("#tensors tbody tr").all():
        name, _file, dtype, shape = [c.strip() for c in row.locator("td").all_inner_texts()[:4]]
        assert dtype == same[name]["dtype_b"]
        assert shape == "[" + ", ".join(map(str, same[name]["shape_b"])) + "]"
    # lineage: the version, its parent and its base, linked
    assert tab.page.locator("svg.lineage a").count() >= 3
    assert "mlp-ft@v2" in tab.page.locator("#checkout-cmd").inner_text()
    audit = [
        e
        for e in cli(finetuned, "audit", "mlp-ft")
        if "mlp-ft@v2" in (e["name"], e["from"], e["to"])
    ]
    assert tab.page.locator("#audit-entries tbody tr").count() == len(audit)
    # the filter (a GET form) narrows the table
    tab.page.fill("#tensor-filter input[name=filter]", "4.")
    tab.page.click("#tensor-filter button")
    tab.page.wait_for_url("**filter=4.**")
    assert sorted(texts(tab, "#tensors tbody td:first-child")) == ["4.bias", "4.weight"]
    tab.open(local_ui + "/ui/v/mlp-ft@v1")  # the fine-tune's first version: its base model
    assert "mlp-base@v2" in tab.page.locator("dl.facts").inner_text()
    assert "base" in tab.page.locator(".lineage-wrap").inner_text()


def test_compare_page_matches_diff_and_blame(tab, local_ui, finetuned):
    tab.open(local_ui + "/ui/compare?a=mlp-base%40v2&b=mlp-ft%40v2", "compare")
    diff = cli(finetuned, "diff", "mlp-base@v2", "mlp-ft@v2")
    blame = {t["name"]: t for t in cli(finetuned, "blame", "mlp-ft@v2")["tensors"]}
    changed = [t for t in diff["tensors"] if t["status"] == "changed"]
    rows = tab.page.locator("#cmp-tensors tbody tr")
    assert rows.count() == len([t for t in diff["tensors"] if t["status"] != "unchanged"])
    shown = []
    for row in rows.all():
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        name = row.get_attribute("data-tensor")
        t = next(t for t in changed if t["name"] == name)
        assert float(cells[3]) == pytest.approx(t["rel_l2"], rel=1e-3)
        assert cells[6].startswith(blame[name]["version"]["ref"])
        shown.append(t["rel_l2"])
    assert shown == sorted(shown, reverse=True)  # sorted by change
    assert tab.page.locator("#layers tbody tr").count() == len(
        {t["name"].rsplit(".", 1)[0] for t in changed}
    )
    for m in diff["metrics"]:
        assert value(m["b"]) in tab.page.locator("#cmp-metrics").inner_text()


def test_audit_page_filters_as_audit_json(tab, local_ui, finetuned):
    tab.open(local_ui + "/ui/audit", "audit")
    every = cli(finetuned, "audit")
    assert tab.page.locator("#audit-entries tbody tr").count() == len(every)
    tab.page.select_option("#audit-filter select[name=kind]", "state")
    tab.page.click("#audit-filter button")
    tab.page.wait_for_url("**kind=state**")
    states = [e for e in every if e["kind"] == "state"]
    assert tab.page.locator("#audit-entries tbody tr").count() == len(states)
    tab.page.select_option("#audit-filter select[name=actor]", "alice")
    tab.page.select_option("#audit-filter select[name=model]", "mlp-base")
    tab.page.click("#audit-filter button")
    assert "Nothing recorded that matches" in tab.page.locator("main").inner_text()


@pytest.mark.parametrize("tab", ["dark"], indirect=True)
def test_dark_pages(tab, local_ui):
    for name, path in [
        ("models", "/ui/"),
        ("model", "/ui/m/mlp-ft"),
        ("version", "/ui/v/mlp-ft@v5"),
        ("compare", "/ui/compare?a=mlp-ft%40v1&b=mlp-ft%40v4"),
        ("audit", "/ui/audit"),
    ]:
        tab.open(local_ui + path, f"dark-{name}")
        bg = tab.page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(18, 21, 26)", (name, bg)


def test_pages_read_without_javascript(browser, local_ui):
    ctx = browser.new_context(java_script_enabled=False)
    page = ctx.new_page()
    page.goto(local_ui + "/ui/m/mlp-ft?metric=loss")
    assert page.locator("figure.plot svg a").count() == 5
    page.goto(local_ui + "/ui/v/mlp-ft@v2?filter=bias")
    assert page.locator("#tensors tbody tr").count() == 3
    ctx.close()


def test_empty_registry_and_unknown_pages(tab, tmp_path):
    import tvc
    from ui_helpers import running_ui

    tvc.Registry.init(tmp_path / "empty").close()
    with running_ui(tmp_path / "empty") as (url, _proc):
        tab.open(url + "/ui/", "empty")
        assert "No models yet" in tab.page.locator("main").inner_text()
        resp = tab.open(url + "/ui/m/nothing", "not-found")
        assert resp.status == 404
        assert "nothing" in tab.page.locator(".flash.err").inner_text()
        got = httpx.get(url + "/ui/v/nothing@v1")  # a client that is no browser: tvc's JSON
        assert got.status_code == 404
        assert got.json()["exit_code"] == errors.UnknownRefError.exit_code


def test_local_ui_refuses_another_host_name(local_ui):
    """DNS rebinding: a page of another site whose name resolves to 127.0.0.1 is refused."""
    resp = httpx.get(local_ui + "/ui/", headers={"Host": "evil.example:80"})
    assert resp.status_code == 403
    assert httpx.get(local_ui + "/ui/", headers={"Host": "localhost"}).status_code == 200
