"""A server used directly (SVN mode): every command with ``-R URL``, ``TVC_REGISTRY`` or
``tvc.Registry(URL)`` against a real ``tvc server``, with no registry of one's own."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import tvc
from server_helpers import running_server, token
from tvc.api import RemoteRegistry
from tvc.cli.main import main
from tvc.errors import AccessError, ExistsError
from tvc.repo.repository import Repository

from repo_helpers import make_model_dir


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server (its data dir ``srv``) and a working directory with no registry in it."""
    monkeypatch.setenv("TVC_AUTHOR", "alice")
    monkeypatch.setenv("TVC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TVC_TOKEN", raising=False)
    monkeypatch.delenv("TVC_DIR", raising=False)
    monkeypatch.delenv("TVC_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    srv = tvc.Registry.init(tmp_path / "srv")
    srv.close()
    (tmp_path / "srv" / ".tvc" / "config.toml").open("a").write(
        '\n[gates]\nproduction = ["metrics.acc >= 0.9"]\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with running_server(tmp_path / "srv") as (url, _proc):
        yield {"url": url, "data": tmp_path / "srv", "root": tmp_path}


def tvc_json(capsys, *args: str):
    capsys.readouterr()
    code = main([*args, "--json"])
    out = capsys.readouterr()
    assert code == 0, (args, out.err)
    return json.loads(out.out)


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_against_a_server(server, capsys, monkeypatch):
    url, root = server["url"], server["root"]
    monkeypatch.setenv("TVC_TOKEN", token(server["data"], "bob", "admin"))
    R = ("-R", url)
    out = root / "out"
    tensors = make_model_dir(out, seed=1, n_layers=3, width=64)
    v1 = tvc_json(capsys, *R, "commit", "m", str(out), "-m", "first", "--metric", "acc=0.95")
    assert (v1["ref"], v1["author"]) == ("m@v1", "alice")
    changed = make_model_dir(out, seed=1, n_layers=3, width=64, changed=(1,))
    monkeypatch.setenv("TVC_REGISTRY", url)  # the environment names the server as well as -R
    v2 = tvc_json(capsys, "commit", "m", str(out), "-m", "second", "--tag", "rel-2")
    monkeypatch.delenv("TVC_REGISTRY")
    assert v2["ref"] == "m@v2" and v2["parents"] == [v1["id"]]
    assert not (Path.cwd() / ".tvc").exists()  # nothing local but the cache

    # The server recorded them, numbered as the client shows, as the token's name.
    srv = tvc.Registry(server["data"])
    assert [(v.ref, v.id) for v in srv.log("m")] == [("m@v2", v2["id"]), ("m@v1", v1["id"])]
    assert srv.resolve("m@rel-2").id == v2["id"]

    assert [v["id"] for v in tvc_json(capsys, *R, "log", "m")] == [v2["id"], v1["id"]]
    shown = tvc_json(capsys, *R, "show", "m@v1")
    assert shown["metrics"] == {"acc": 0.95} and {f["path"] for f in shown["files"]} == {
        "config.json",
        "model.safetensors",
    }
    assert [m["model"] for m in tvc_json(capsys, *R, "ls")] == ["m"]
    assert {f["path"] for f in tvc_json(capsys, *R, "ls", "m@v2")["files"]} == {
        "config.json",
        "model.safetensors",
    }
    code, text, _ = run(capsys, *R, "cat", "m@v1", "config.json")
    assert code == 0 and json.loads(text) == {"layers": 3, "width": 64}
    assert main([*R, "checkout", "m@v2", str(root / "co")]) == 0
    assert (root / "co" / "model.safetensors").read_bytes() == (
        out / "model.safetensors"
    ).read_bytes()
    diff = tvc_json(capsys, *R, "diff", "m@v1", "m@v2")
    assert [t["name"] for t in diff["tensors"] if t["status"] == "changed"] == ["layers.1.weight"]
    blame = tvc_json(capsys, *R, "blame", "m@v2")
    by = {t["name"]: t["version"]["ref"] for t in blame["tensors"]}
    assert by["layers.1.weight"] == "m@v2" and by["layers.0.weight"] == "m@v1"
    assert not np.array_equal(tensors["layers.1.weight"], changed["layers.1.weight"])

    # Refs: the server's own registry methods move them.
    assert main([*R, "branch", "m", "exp", "--from", "v1"]) == 0
    assert {b["name"] for b in tvc_json(capsys, *R, "branch", "m")} == {"main", "exp"}
    assert main([*R, "tag", "m", "rel-1", "v1"]) == 0
    assert {t["name"] for t in tvc_json(capsys, *R, "tag", "m")} == {"rel-1", "rel-2"}
    assert main([*R, "branch", "m", "-d", "exp"]) == 0
    assert main([*R, "tag", "m", "rel-1", "-d"]) == 0
    assert {r["name"] for r in srv.refs_of("m")} == {"main", "rel-2"}

    # Aliases pass the server's gate (its config.toml, not the client's): acc 0.95 passes.
    assert main([*R, "alias", "set", "m", "production", "v1", "--reason", "launch"]) == 0
    assert main([*R, "metric", "m@v2", "acc=0.5", "--reason", "held-out"]) == 0
    code, _o, err = run(capsys, *R, "alias", "set", "m", "production", "v2")
    assert code == 11 and "gate 'production'" in err
    assert main([*R, "alias", "set", "m", "staging", "v2"]) == 0
    assert main([*R, "alias", "set", "m", "staging", "v1"]) == 0
    back = tvc_json(capsys, *R, "rollback", "m", "staging", "--reason", "latency")
    assert back["to"] == "m@v2" and back["rollback"]
    moves = tvc_json(capsys, *R, "alias", "history", "m", "staging")
    assert [(e["actor"], e["to"]) for e in moves] == [
        ("bob", "m@v2"),
        ("bob", "m@v1"),
        ("bob", "m@v2"),
    ]
    assert {a["alias"] for a in tvc_json(capsys, *R, "alias", "list", "m")} == {
        "production",
        "staging",
    }
    assert srv.resolve("m@staging").id == v2["id"]

    # Lifecycle by the server's machine; metrics added later.
    states = tvc_json(capsys, *R, "lifecycle", "states")  # the server's machine and gates
    assert "metrics.acc >= 0.9" in json.dumps(states)
    assert main([*R, "lifecycle", "set", "m@v2", "training"]) == 0
    code, _o, err = run(capsys, *R, "lifecycle", "set", "m@v2", "production")
    assert code == 11 and "legal next states" in err
    hist = tvc_json(capsys, *R, "lifecycle", "history", "m")
    assert [(e["to"], e["actor"]) for e in hist] == [("training", "bob")]
    assert tvc_json(capsys, *R, "metric", "m@v2")["metrics"]["acc"] == 0.5
    assert srv.show("m@v2").state == "training" and srv.show("m@v2").metrics["acc"] == 0.5

    found = tvc_json(capsys, *R, "search", "metrics.acc >= 0.9")
    assert [v["id"] for v in found] == [v1["id"]]
    lin = tvc_json(capsys, *R, "lineage", "m@v2")
    assert v1["id"] in json.dumps(lin)
    audit = tvc_json(capsys, *R, "audit", "m")
    kinds = {(e["kind"], e["actor"]) for e in audit}
    assert {("alias", "bob"), ("state", "bob"), ("metrics", "bob"), ("tag", "bob")} <= kinds
    st = tvc_json(capsys, *R, "stats")
    assert st["models"]["m"]["versions"] == 2 and st["versions"] == 2

    # Deleting: on the server, by its rules (a tagged version needs --force).
    code, _o, err = run(capsys, *R, "rm", "m@v2")
    assert code == 11 and "tag rel-2" in err
    assert main([*R, "rm", "m@v2", "--force", "--reason", "bad"]) == 0
    assert [v["ref"] for v in tvc_json(capsys, *R, "log", "m")] == ["m@v1"]
    code, _o, err = run(capsys, *R, "show", "m@v2")
    assert code == 4 and "deleted" in err
    assert [v.ref for v in tvc.Registry(server["data"]).log("m")] == ["m@v1"]

    # What only a data directory does is refused with a clear line, not half done.
    for args in (["fsck"], ["gc"], ["push"]):
        code, _o, err = run(capsys, *R, *args)
        assert code == 2 and url in err, (args, err)


def test_a_token_sees_and_changes_only_what_it_may(server, capsys, monkeypatch):
    url, data, root = server["url"], server["data"], server["root"]
    admin = token(data, "admin", "admin")
    for model, seed in (("m", 1), ("other", 2)):
        make_model_dir(root / model, seed=seed, n_layers=2, width=32)
        with tvc.Registry(url, token=admin) as reg:
            reg.commit(model, [root / model], "first", metrics={"acc": 0.9}, detect_code=False)
            reg.set_alias(model, "production", "v1")
    monkeypatch.setenv("TVC_TOKEN", token(data, "only-m", "write", models=["m"]))
    R = ("-R", url)
    assert [m["model"] for m in tvc_json(capsys, *R, "ls")] == ["m"]
    assert {v["model"] for v in tvc_json(capsys, *R, "search", "")} == {"m"}
    assert {e["model"] for e in tvc_json(capsys, *R, "audit")} == {"m"}
    assert set(tvc_json(capsys, *R, "stats")["models"]) == {"m"}
    for args in (
        ["show", "other@v1"],
        ["audit", "other"],
        ["alias", "set", "other", "staging", "v1"],
        ["search", "", "--model", "other"],
    ):
        code, _o, err = run(capsys, *R, *args)
        assert code == 4 and "other" in err, (args, err)
    code, _o, err = run(capsys, *R, "rm", "m@v1", "--force")  # deleting needs admin
    assert code == 12
    # A read token cannot commit: refused, and nothing is recorded.
    monkeypatch.setenv("TVC_TOKEN", token(data, "reader", "read"))
    code, _o, err = run(capsys, *R, "commit", "m", str(root / "m"), "-m", "x")
    assert code == 12
    assert len(tvc.Registry(data).log("m")) == 1
    monkeypatch.setenv("TVC_TOKEN", "tvc_" + "A" * 43)
    assert run(capsys, *R, "log", "m")[0] == 12


class CountingProxy:
    """A TCP relay in front of the server counting the bytes each way: what really travels."""

    def __init__(self, port: int) -> None:
        self.up = self.down = 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._target = port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, "down"), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    setattr(self, way, getattr(self, way) + len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def reset(self) -> None:
        with self._lock:
            self.up = self.down = 0

    def close(self) -> None:
        self.sock.close()


def stored_bytes(data: Path) -> int:
    return tvc.Registry(data).stats()["pack_bytes"]


def test_a_commit_sends_only_the_chunks_the_server_lacks(server, monkeypatch):
    """One tensor of eight changed: what goes up is that tensor's chunk (and the small
    records), not the model; the bytes on the wire are counted by a relay."""
    data, root = server["data"], server["root"]
    proxy = CountingProxy(int(server["url"].rsplit(":", 1)[1]))
    url = f"http://127.0.0.1:{proxy.port}"
    secret = token(data, "writer", "write")
    out = root / "out"
    make_model_dir(out, seed=3, n_layers=8, width=256)  # 8 x 256 KiB weights
    logical = (out / "model.safetensors").stat().st_size
    with tvc.Registry(url, token=secret) as reg:
        reg.commit("m", [out], "first", detect_code=False)
    assert proxy.up > 0.5 * logical  # the first commit sends (compressed) everything
    make_model_dir(out, seed=3, n_layers=8, width=256, changed=(5,))
    before = stored_bytes(data)
    # A second client with an empty cache: nothing of the model is here, yet only the new
    # tensor goes up (the rest is hashed here and found on the server).
    monkeypatch.setenv("TVC_CACHE_DIR", str(root / "cache2"))
    proxy.reset()
    with tvc.Registry(url, token=secret) as reg:
        v2 = reg.commit("m", [out], "second", detect_code=False)
        sent = reg.last_upload
    added = stored_bytes(data) - before
    assert v2.ref == "m@v2" and sent.objects_skipped > 0
    assert 0 < added < logical / 4
    # The payload that travelled is what the server added (plus headers); on the wire, the
    # metadata questions come on top: a few KB, not the model.
    assert sent.bytes_sent <= 1.1 * added + 4096, (sent.bytes_sent, added)
    assert proxy.up <= added + 64 * 1024, (proxy.up, added)
    assert proxy.down < logical / 4, proxy.down  # nothing of the model came down either
    proxy.close()


def test_the_python_api_reads_tensors_lazily(server, tmp_path):
    data, root = server["data"], server["root"]
    secret = token(data, "w", "write")
    make_model_dir(root / "out", seed=5, n_layers=6, width=256)
    with tvc.Registry(server["url"], token=secret) as reg:
        assert isinstance(reg, RemoteRegistry) and repr(reg) == f"<tvc.Registry {server['url']}>"
        reg.commit("m", [root / "out"], "first", detect_code=False)
    fresh = tvc.Registry(server["url"], token=secret, cache=tmp_path / "fresh")
    got = fresh.open("m@v1").tensor("layers.2.weight")
    want = tvc.Registry(data).open("m@v1").tensor("layers.2.weight")
    np.testing.assert_array_equal(got, want)
    # Only that tensor's chunk came: the cache holds one chunk, not the model (stats of the
    # cache itself: the client's own stats() asks the server).
    cached = Repository.stats(fresh)["chunks"]
    assert cached == 1, cached
    fresh.close()


def test_two_clients_committing_to_one_branch_both_land_in_a_line(server, tmp_path):
    data, root = server["data"], server["root"]
    secret = token(data, "w", "write")
    make_model_dir(root / "base", seed=7, n_layers=2, width=32)
    with tvc.Registry(server["url"], token=secret) as reg:
        reg.commit("m", [root / "base"], "base", detect_code=False)
    for i in range(2):
        make_model_dir(root / f"o{i}", seed=7, n_layers=2, width=32, changed=(i,))
    clients = [
        tvc.Registry(server["url"], token=secret, cache=tmp_path / f"c{i}") for i in range(2)
    ]
    for c in clients:
        c.log("m")  # both caches know v1 before they race
    start = threading.Barrier(2)
    results: dict[int, object] = {}

    def commit(i: int) -> None:
        start.wait()
        try:
            results[i] = clients[i].commit("m", [root / f"o{i}"], f"c{i}", detect_code=False)
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, Exception) for r in results.values()), results
    log = tvc.Registry(data).log("m")
    assert [v.message for v in log][-1] == "base" and len(log) == 3
    assert {v.message for v in log[:2]} == {"c0", "c1"}
    assert list(log[0].parents) == [log[1].id] and list(log[1].parents) == [log[2].id]  # a line
    assert sorted(v.number for v in log) == [1, 2, 3]
    for c in clients:
        assert [v.id for v in c.log("m")] == [v.id for v in log]
        c.close()


def test_a_commit_refused_by_the_server_records_nothing(server, tmp_path):
    data, root = server["data"], server["root"]
    make_model_dir(root / "out", seed=9, n_layers=2, width=32)
    reader = tvc.Registry(server["url"], token=token(data, "r", "read"))
    with reader, pytest.raises(AccessError):
        reader.commit("m", [root / "out"], "x", detect_code=False)
    with tvc.Registry(server["url"], token=token(data, "w", "write")) as reg:
        reg.commit("m", [root / "out"], "x", tags=["t"], detect_code=False)
        make_model_dir(root / "out", seed=9, n_layers=2, width=32, changed=(0,))
        with pytest.raises(ExistsError, match="tag"):
            reg.commit("m", [root / "out"], "y", tags=["t"], detect_code=False)
        assert [v.message for v in reg.log("m")] == ["x"]
    assert [v.message for v in tvc.Registry(data).log("m")] == ["x"]


def test_the_readme_examples_run(server, capsys, monkeypatch):
    """README's SVN-mode block (```sh), line by line, against the server (``$URL``)."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = re.findall(r"^```sh\n(.*?)^```", readme, flags=re.S | re.M)
    monkeypatch.setenv("TVC_TOKEN", token(server["data"], "readme", "admin"))
    step = 0
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) >= 20
    for line in lines:
        argv = shlex.split(line.replace("$URL", server["url"]), comments=True)
        assert argv[0] == "tvc", line
        if "commit" in argv:
            step += 1
            make_model_dir(Path("out"), seed=1, n_layers=2, width=32, changed=tuple(range(step)))
        expected = re.search(r"#.*\bexit (\d+)", line)
        code, _out, err = run(capsys, *argv[1:])
        assert code == (int(expected.group(1)) if expected else 0), f"{line}\n{err}"


def test_changes_made_elsewhere_are_seen_by_the_next_command(server, capsys, monkeypatch):
    """The cache skips its refresh only when the server's digest is unchanged: a version,
    an alias move, a metric, a state, a deleted branch or version made on the server's own
    registry all show in the next command."""
    url, data, root = server["url"], server["data"], server["root"]
    monkeypatch.setenv("TVC_TOKEN", token(data, "viewer", "read"))
    R = ("-R", url)
    srv = tvc.Registry(data)
    make_model_dir(root / "out", seed=1, n_layers=2, width=32)
    srv.commit("m", [root / "out"], "one", metrics={"acc": 0.95}, detect_code=False)
    assert [v["ref"] for v in tvc_json(capsys, *R, "log", "m")] == ["m@v1"]
    assert [v["ref"] for v in tvc_json(capsys, *R, "log", "m")] == ["m@v1"]  # unchanged
    make_model_dir(root / "out", seed=1, n_layers=2, width=32, changed=(0,))
    srv.commit("m", [root / "out"], "two", detect_code=False)
    assert [v["ref"] for v in tvc_json(capsys, *R, "log", "m")] == ["m@v2", "m@v1"]
    srv.set_alias("m", "production", "v1")
    assert tvc_json(capsys, *R, "alias", "list", "m")[0]["version"] == "v1"
    srv.add_metrics("m@v2", {"f1": 0.5})
    assert tvc_json(capsys, *R, "show", "m@v2")["metrics"] == {"f1": 0.5}
    srv.set_state("m@v2", "training")
    assert tvc_json(capsys, *R, "show", "m@v2")["state"] == "training"
    srv.branch("m", "exp", "v1")
    assert {b["name"] for b in tvc_json(capsys, *R, "branch", "m")} == {"main", "exp"}
    srv.delete_branch("m", "exp")
    assert {b["name"] for b in tvc_json(capsys, *R, "branch", "m")} == {"main"}
    srv.rm("m@v2")
    assert [v["ref"] for v in tvc_json(capsys, *R, "log", "m")] == ["m@v1"]
    srv.rm_model("m", force=True)
    assert tvc_json(capsys, *R, "ls") == []
