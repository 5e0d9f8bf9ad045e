"""The registry's commands over HTTP (:mod:`tvc.server.registry_api`): the server's own
registry code runs them, as the token's name, and a token of some models sees only those —
in search results, the audit log and stats too."""

from __future__ import annotations

import httpx
import pytest

import tvc
from server_helpers import running_server, token

from repo_helpers import make_model_dir


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("regapi")
    reg = tvc.Registry.init(root / "reg")
    for model, seed in (("m", 1), ("other", 2)):
        make_model_dir(root / f"out-{model}", seed=seed, n_layers=2, width=32)
        reg.commit(model, [root / f"out-{model}"], "first", metrics={"acc": 0.9}, detect_code=False)
        reg.set_alias(model, "production", "v1")
    reg.close()
    toks = {
        "all": token(root / "reg", "all", "admin"),
        "only-m": token(root / "reg", "only-m", "admin", models=["m"]),
    }
    with running_server(root / "reg") as (url, _proc):
        yield {"api": url + "/api/v1", "tokens": toks, "data": root / "reg"}


def get(server, who, path, **params):
    h = {"Authorization": f"Bearer {server['tokens'][who]}"}
    return httpx.get(server["api"] + path, params=params, headers=h, timeout=30)


def post(server, who, path, body):
    h = {"Authorization": f"Bearer {server['tokens'][who]}"}
    return httpx.post(server["api"] + path, json=body, headers=h, timeout=30)


def test_search_audit_and_stats_hold_only_readable_models(server):
    ids = get(server, "all", "/search", q="metrics.acc >= 0.9").json()["ids"]
    assert len(ids) == 2
    mine = get(server, "only-m", "/search", q="metrics.acc >= 0.9").json()["ids"]
    reg = tvc.Registry(server["data"])
    assert mine == [reg.resolve("m@v1").id]
    # The limit applies to what the token may see (not to everything, then filtered).
    assert get(server, "only-m", "/search", q="", limit=1).json()["ids"] == mine
    assert get(server, "only-m", "/search", q="", model="other").status_code == 404
    events = get(server, "only-m", "/audit").json()["events"]
    assert events and {e["model"] for e in events} == {"m"}
    assert {e["model"] for e in get(server, "all", "/audit").json()["events"]} == {"m", "other"}
    assert get(server, "only-m", "/audit", model="other").status_code == 404
    st = get(server, "only-m", "/stats").json()
    assert set(st["models"]) == {"m"} and st["versions"] == 1
    assert st["chunks"] is None  # the store's own totals would tell about the other model
    assert set(get(server, "all", "/stats").json()["models"]) == {"m", "other"}


def test_writes_to_a_model_the_token_may_not_read_are_404_and_change_nothing(server):
    reg = tvc.Registry(server["data"])
    before = reg.audit("other")
    for path, body in (
        ("/aliases/set", {"model": "other", "alias": "staging", "ref": "v1"}),
        ("/aliases/remove", {"model": "other", "alias": "production"}),
        ("/aliases/rollback", {"model": "other", "alias": "production"}),
        ("/lifecycle/set", {"ref": "other@v1", "state": "training"}),
        ("/metrics/add", {"ref": "other@v1", "metrics": {"f1": 1}}),
        ("/refs/create", {"model": "other", "kind": "branch", "name": "x"}),
        ("/refs/delete", {"model": "other", "kind": "branch", "name": "main"}),
        ("/rm", {"target": "other@v1", "force": True}),
        ("/rm", {"target": "other", "force": True}),
    ):
        resp = post(server, "only-m", path, body)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["exit_code"] == 4
    assert reg.audit("other") == before


def test_writes_run_the_servers_registry_code_as_the_token(server):
    resp = post(server, "only-m", "/lifecycle/set", {"ref": "m@v1", "state": "production"})
    assert resp.status_code == 409 and "legal next states" in resp.json()["error"]
    resp = post(server, "only-m", "/refs/create", {"model": "m", "kind": "tag", "name": "../x"})
    assert resp.status_code == 400
    resp = post(server, "only-m", "/aliases/set", {"model": "m", "alias": "staging", "ref": "v1"})
    assert resp.status_code == 200 and resp.json()["event"]["actor"] == "only-m"
    resp = post(server, "only-m", "/metrics/add", {"ref": "m@v1", "metrics": {"f1": 0.5}})
    assert resp.status_code == 200
    reg = tvc.Registry(server["data"])
    assert reg.resolve("m@staging").id == reg.resolve("m@v1").id
    assert reg.metric_history("m@v1")[-1].actor == "only-m"
    lc = get(server, "only-m", "/lifecycle").json()
    assert set(lc) == {"lifecycle", "gates"}


def test_the_access_matrix_covers_these_routes(server):
    """test_access.py walks every route of the spec: these are in it, with their scopes."""
    spec = httpx.get(server["api"].removesuffix("/api/v1") + "/openapi.json").json()
    scopes = {
        (method.upper(), path.removeprefix("/api/v1")): op.get("x-tvc-scope")
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    want = {
        ("GET", "/state"): "read",
        ("GET", "/lifecycle"): "read",
        ("GET", "/search"): "read",
        ("GET", "/audit"): "read",
        ("GET", "/stats"): "read",
        ("POST", "/aliases/set"): "write",
        ("POST", "/aliases/remove"): "write",
        ("POST", "/aliases/rollback"): "write",
        ("POST", "/lifecycle/set"): "write",
        ("POST", "/metrics/add"): "write",
        ("POST", "/refs/create"): "write",
        ("POST", "/refs/delete"): "write",
        ("POST", "/rm"): "admin",
    }
    assert {k: scopes.get(k) for k in want} == want
