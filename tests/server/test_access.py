"""Who may do what on a real ``tvc server``: the access matrix over every endpoint of its
OpenAPI spec (so a new endpoint cannot be missed), model-scoped tokens, tokens at rest."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import httpx
import pytest

import tvc
from server_helpers import running_server, token
from tvc.cli.main import main
from tvc.remote import open_transport, sync
from tvc.server.tokens import TokenStore

from repo_helpers import make_model_dir

SCOPES = ["read", "write", "admin"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with models ``m`` and ``other`` and one token of each kind."""
    root = tmp_path_factory.mktemp("srv")
    os.environ.setdefault("TVC_AUTHOR", "tester")
    reg = tvc.Registry.init(root / "reg")
    for model, seed in (("m", 1), ("other", 2)):
        make_model_dir(root / f"out-{model}", seed=seed, n_layers=2, width=32)
        reg.commit(model, [root / f"out-{model}"], "first", detect_code=False)
    ids = {m: reg.resolve(m).id for m in ("m", "other")}
    used = {
        m: [c for fe in reg.resolve(m).files for c, _n in reg.manifest(fe.manifest_id).chunks]
        for m in ("m", "other")
    }
    chunk = {"m": used["m"][0], "other": next(c for c in used["other"] if c not in used["m"])}
    reg.close()
    toks = {s: token(root / "reg", s, s) for s in SCOPES}
    toks["expired"] = token(root / "reg", "expired", "admin", expires="0s")
    toks["revoked"] = token(root / "reg", "revoked", "admin")
    TokenStore(root / "reg" / ".tvc").revoke("revoked")
    toks["only-m"] = token(root / "reg", "only-m", "admin", models=["m"])
    with running_server(root / "reg") as (url, _proc):
        yield {"url": url, "tokens": toks, "ids": ids, "chunk": chunk, "root": root}


def endpoints(spec: dict) -> list[tuple[str, str, str]]:
    out = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            out.append((method.upper(), path, op.get("x-tvc-scope")))
    return out


def call(server, method: str, path: str, tok: str | None, body=None):
    path = re.sub(r"\{[^}]+\}", "x" * 64, path)
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    kw = {"json": body if body is not None else {}} if method in ("POST", "PUT") else {}
    if method == "PUT":
        kw = {"content": b"TVCPACK2"}
    return httpx.request(method, server["url"] + path, headers=headers, timeout=30, **kw)


def test_every_endpoint_declares_a_scope(server):
    spec = httpx.get(server["url"] + "/openapi.json").json()
    eps = endpoints(spec)
    assert len(eps) >= 12
    for method, path, scope in eps:
        assert scope in SCOPES, f"{method} {path} declares no x-tvc-scope"
    assert httpx.get(server["url"] + "/docs").status_code == 200


@pytest.mark.parametrize("who", [None, "wrong", "expired", "revoked"])
def test_no_valid_token_is_401_everywhere(server, who):
    spec = httpx.get(server["url"] + "/openapi.json").json()
    tok = {None: None, "wrong": "tvc_" + "A" * 43}.get(who, server["tokens"].get(who))
    for method, path, _scope in endpoints(spec):
        resp = call(server, method, path, tok)
        assert resp.status_code == 401, (method, path, who, resp.text)
        assert resp.json()["exit_code"] == 12


def test_a_scope_too_small_is_403_and_enough_is_neither(server):
    spec = httpx.get(server["url"] + "/openapi.json").json()
    for method, path, need in endpoints(spec):
        for have in SCOPES:
            resp = call(server, method, path, server["tokens"][have])
            if SCOPES.index(have) < SCOPES.index(need):
                assert resp.status_code == 403, (method, path, have, resp.text)
            else:
                assert resp.status_code not in (401, 403), (method, path, have, resp.text)


def test_a_model_the_token_may_not_read_is_404_everywhere(server):
    url, tok, ids, chunk = server["url"], server["tokens"]["only-m"], server["ids"], server["chunk"]
    h = {"Authorization": f"Bearer {tok}"}
    api = url + "/api/v1"
    assert httpx.get(f"{api}/versions/m@v1", headers=h).status_code == 200
    assert httpx.get(f"{api}/versions/other@v1", headers=h).status_code == 404
    refs = httpx.get(f"{api}/refs", headers=h).json()["refs"]
    assert {r["model"] for r in refs} == {"m"}
    models = httpx.get(f"{api}/models", headers=h).json()["models"]
    assert [m["model"] for m in models] == ["m"]
    for path in ("/versions/ancestry", "/versions/objects"):
        assert httpx.post(api + path, json={"ids": [ids["other"]]}, headers=h).status_code == 404
        assert httpx.post(api + path, json={"ids": [ids["m"]]}, headers=h).status_code == 200
    body = httpx.post(f"{api}/versions/info", json={"ids": list(ids.values())}, headers=h).json()
    assert list(body["versions"]) == [ids["m"]]
    pack = f"{api}/objects/pack"
    assert httpx.post(pack, json={"ids": [chunk["other"]]}, headers=h).status_code == 404
    assert httpx.post(pack, json={"ids": [chunk["m"]]}, headers=h).status_code == 200
    # No oracle: another model's objects count as missing for this token (sent again, dropped).
    asked = {"ids": [chunk["m"], chunk["other"]]}
    body = httpx.post(f"{api}/objects/missing", json=asked, headers=h).json()
    assert body["missing"] == [chunk["other"]]
    rec = {"model": "other", "versions": []}
    assert httpx.post(f"{api}/record", json=rec, headers=h).status_code == 404


def test_tokens_are_stored_hashed_in_the_db_and_not_in_a_file(server):
    regdir = server["root"] / "reg" / ".tvc"
    assert not (regdir / "tokens.json").exists()  # replicas share no local file
    db_bytes = b"".join(p.read_bytes() for p in regdir.glob("tvc.db*"))
    for secret in server["tokens"].values():
        assert secret.encode() not in db_bytes
    store = TokenStore(regdir)
    assert {t.name for t in store.list()} >= set(SCOPES)
    store.close()


def test_a_tokens_json_of_old_is_imported_once(tmp_path):
    import hashlib

    tvc.Registry.init(tmp_path / "r").close()
    regdir = tmp_path / "r" / ".tvc"
    secret = "tvc_old-secret"
    rows = [
        {"name": "old", "scope": "write", "models": ["m*"], "created": 1.0, "expires": None,
         "revoked": None, "hash": hashlib.sha256(secret.encode()).hexdigest()},
    ]  # fmt: skip
    (regdir / "tokens.json").write_text(json.dumps(rows))
    store = TokenStore(regdir)
    tok = store.authenticate(secret)
    assert (tok.name, tok.scope, tok.models) == ("old", "write", ["m*"])
    assert not (regdir / "tokens.json").exists()
    assert (regdir / "tokens.json.imported").exists()
    store.revoke("old")
    store.close()
    again = TokenStore(regdir)  # the renamed file is not imported again
    with pytest.raises(tvc.errors.AccessError):
        again.authenticate(secret)
    again.close()


def test_login_stores_the_token_0600_and_push_records_its_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("TVC_TOKEN", raising=False)
    tvc.Registry.init(tmp_path / "srv").close()
    secret = token(tmp_path / "srv", "ci-bot", "write")
    with running_server(tmp_path / "srv") as (url, _proc):
        assert main(["login", url, "--token", "tvc_wrong"]) == 12
        assert main(["login", url, "--token", secret]) == 0
        cred = tmp_path / "cfg" / "tvc" / "credentials.json"
        assert stat.S_IMODE(cred.stat().st_mode) == 0o600
        a = tvc.Registry.init(tmp_path / "a")
        make_model_dir(tmp_path / "out", seed=3, n_layers=2, width=32)
        a.commit("m", [tmp_path / "out"], "x", detect_code=False)
        monkeypatch.chdir(tmp_path / "a")
        assert main(["remote", "add", "origin", url]) == 0
        assert main(["push", "m", "--json"]) == 0
        out = capsys.readouterr().out
        assert json.loads(out[out.index("{") :])["versions"] == 1
        monkeypatch.setenv("TVC_TOKEN", "tvc_overridden")  # the environment wins over login
        assert main(["push", "m"]) == 12
    srv = tvc.Registry(tmp_path / "srv")
    events = srv.audit()
    assert any(e["actor"] == "ci-bot" for e in events), events


def test_push_over_http_needs_write(tmp_path, server):
    a = tvc.Registry.init(tmp_path / "a")
    make_model_dir(tmp_path / "out", seed=4, n_layers=2, width=32)
    a.commit("new-model", [tmp_path / "out"], "x", detect_code=False)
    with open_transport(server["url"], server["tokens"]["read"]) as remote:
        from tvc.errors import AccessError

        with pytest.raises(AccessError, match="scope read"):
            sync.push(a, remote, ["new-model"])


def test_a_path_is_not_a_url(tmp_path):
    from tvc.errors import UsageError

    with pytest.raises(UsageError):
        open_transport("ftp://example/x")
    assert Path(tmp_path).exists()


def test_malformed_record_requests_are_clear_errors_that_change_nothing(server):
    api, h = server["url"] + "/api/v1", {"Authorization": f"Bearer {server['tokens']['write']}"}
    before = httpx.get(f"{api}/refs", headers=h).json()
    bad = [
        {"model": "m", "versions": [server["chunk"]["m"]]},  # a chunk, not a version
        {"model": "m", "versions": ["../../etc/passwd"]},
        {"model": "m", "history": [{"type": "state", "at": "soon"}]},
        {
            "model": "m",
            "history": [
                {"type": "alias", "name": "a/b", "old": None, "new": None, "at": 1.0, "actor": "x"}
            ],
        },
        {"model": "../m", "versions": []},
        {"model": "m", "moves": [["main", None, "0" * 64]]},
    ]
    for body in bad:
        resp = httpx.post(f"{api}/record", json=body, headers=h)
        assert resp.status_code in (400, 404, 409, 422), (body, resp.status_code, resp.text)
        assert "error" in resp.json() or "detail" in resp.json()
    assert httpx.get(f"{api}/refs", headers=h).json() == before


def test_an_admin_manages_tokens_over_http(server, monkeypatch, capsys):
    url = server["url"]
    monkeypatch.setenv("TVC_TOKEN", server["tokens"]["write"])
    assert main(["token", "list", "--server", url]) == 12  # write is not admin
    monkeypatch.setenv("TVC_TOKEN", server["tokens"]["admin"])
    capsys.readouterr()
    assert main(["token", "create", "temp", "--scope", "read", "--server", url]) == 0
    secret = capsys.readouterr().out.strip()
    h = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(url + "/api/v1/whoami", headers=h).json()["name"] == "temp"
    assert main(["token", "list", "--server", url, "--json"]) == 0
    assert "temp" in {t["name"] for t in json.loads(capsys.readouterr().out)}
    assert main(["token", "revoke", "temp", "--server", url]) == 0
    assert httpx.get(url + "/api/v1/whoami", headers=h).status_code == 401
