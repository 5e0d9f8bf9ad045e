"""The registry commands as a user meets them: exit codes, one-line errors with a caret for
queries, --json with stable keys."""

from __future__ import annotations

import json

import pytest

from tvc.cli.main import main


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    capsys.readouterr()

    def run(*argv):
        code = main(list(argv))
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    def version(n, **metrics):
        d = tmp_path / f"out{n}"
        d.mkdir()
        (d / "w.txt").write_text(f"weights {n}")
        pairs = [x for k, v in metrics.items() for x in ("--metric", f"{k}={v}")]
        code, _out, err = run("commit", "bert", str(d), "-m", f"run {n}", "--no-code", *pairs)
        assert code == 0, err

    run.version = version
    run.tmp = tmp_path
    return run


def test_metric_later(cli):
    cli.version(1, acc=0.91)
    code, out, _ = cli("show", "bert@v1", "--json")
    vid = json.loads(out)["id"]
    code, out, _ = cli("metric", "bert@v1", "acc=0.93", "f1=0.9", "--reason", "eval", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["id"] == vid
    assert doc["metrics"] == {"acc": 0.93, "f1": 0.9} and doc["committed"] == {"acc": 0.91}
    assert set(doc["history"][0]) == {"ref", "id", "metrics", "previous", "actor", "at", "reason"}
    code, out, _ = cli("metric", "bert@v1")
    assert "acc     0.93" in out and "eval" in out
    code, out, _ = cli("fsck", "--json")
    assert json.loads(out)["ok"]
    code, _, err = cli("metric", "bert@v1", "acc")
    assert code == 2 and "expected KEY=VALUE" in err


def test_alias_commands_and_rollback(cli):
    for n in (1, 2, 3):
        cli.version(n)
    for ref in ("v1", "v2", "v3"):
        code, out, _ = cli("alias", "set", "bert", "production", ref, "--reason", f"ship {ref}")
        assert code == 0
    assert out.strip() == "bert@production: bert@v2 → bert@v3  (ship v3)"
    code, out, _ = cli("rollback", "bert", "production", "--reason", "regression")
    assert code == 0 and "bert@v3 → bert@v2 [rollback]" in out
    code, out, _ = cli("alias", "list", "bert", "--json")
    (row,) = json.loads(out)
    assert set(row) == {
        "alias",
        "version",
        "ref",
        "id",
        "state",
        "since",
        "actor",
        "reason",
        "forced",
    }
    assert (row["version"], row["reason"]) == ("v2", "regression")
    code, out, _ = cli("alias", "history", "bert", "production", "--json")
    moves = json.loads(out)
    assert [(m["from"], m["to"], m["rollback"]) for m in moves] == [
        (None, "bert@v1", False),
        ("bert@v1", "bert@v2", False),
        ("bert@v2", "bert@v3", False),
        ("bert@v3", "bert@v2", True),
    ]
    assert all(m["actor"] == "tester" and m["at"] for m in moves)
    code, out, _ = cli("rollback", "bert", "production", "--to", "v3", "--json")
    assert json.loads(out)["to"] == "bert@v3"
    code, out, _ = cli("cat", "bert@production", "w.txt")
    assert out == "weights 3"
    code, out, _ = cli("alias", "rm", "bert", "production")
    assert code == 0 and "was bert@v3" in out
    code, _, err = cli("show", "bert@production")
    assert code == 4
    code, _, err = cli("rollback", "bert", "staging")
    assert code == 4 and "no alias 'staging'" in err


def test_lifecycle_commands(cli):
    cli.version(1, accuracy=0.85)
    cfg = cli.tmp / ".tvc" / "config.toml"
    cfg.write_text(cfg.read_text() + '\n[gates]\nproduction = "metrics.accuracy >= 0.9"\n')
    code, _, err = cli("lifecycle", "set", "bert@v1", "production")
    assert code == 11
    assert err.count("\n") == 1 and err.startswith("tvc: error: bert@v1 is created")
    assert "legal next states: training, archived" in err
    for st in ("training", "trained", "evaluated", "staged"):
        assert cli("lifecycle", "set", "bert@v1", st)[0] == 0
    code, _, err = cli("lifecycle", "set", "bert@v1", "production")
    assert code == 11 and "metrics.accuracy >= 0.9 (metrics.accuracy = 0.85)" in err
    code, out, _ = cli(
        "lifecycle", "set", "bert@v1", "production", "--force", "-r", "exec override", "--json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["forced"] and doc["overridden"].startswith("gate production")
    code, out, _ = cli("lifecycle", "history", "bert", "--json")
    hist = json.loads(out)
    assert [h["to"] for h in hist] == ["training", "trained", "evaluated", "staged", "production"]
    assert set(hist[0]) == {
        "ref",
        "id",
        "from",
        "to",
        "actor",
        "at",
        "reason",
        "forced",
        "overridden",
    }
    code, out, _ = cli("lifecycle", "history", "bert@v1")
    assert "staged → production [forced: gate production" in out and "(exec override)" in out
    code, out, _ = cli("lifecycle", "states", "--json")
    doc = json.loads(out)
    assert doc["initial"] == "created" and doc["gates"] == {
        "production": ["metrics.accuracy >= 0.9"]
    }
    code, out, _ = cli("lifecycle", "states")
    assert "staged       → production, archived" in out
    code, out, _ = cli("audit", "bert", "--json")
    assert [e["kind"] for e in json.loads(out)][:2] == ["state", "state"]


def test_search_command(cli):
    for n, acc in ((1, 0.8), (2, 0.95), (3, 0.9)):
        cli.version(n, acc=acc)
    code, out, _ = cli("search", "metrics.acc >= 0.9", "--order-by", "-metrics.acc", "--json")
    docs = json.loads(out)
    assert code == 0 and [d["ref"] for d in docs] == ["bert@v2", "bert@v3"]
    assert "files" not in docs[0] and docs[1]["refs"] == [{"kind": "branch", "name": "main"}]
    code, out, _ = cli("search", "metrics.acc > 0.5", "-o", "metrics.acc", "-n", "1")
    assert out.splitlines()[1].startswith("bert@v1 ")
    code, out, err = cli("search", "metrics.acc >= and state = created")
    assert code == 2
    first, query_line, caret_line = err.splitlines()
    assert first == "tvc: error: search, column 16: expected a value after '>=', got 'and'"
    assert query_line == "  metrics.acc >= and state = created"
    assert caret_line == "  " + " " * 15 + "^"
    code, out, err = cli("search", "state = shipped")
    assert code == 2 and "unknown state 'shipped'" in err
    code, out, err = cli("search", "metrics.acc > 2")
    assert code == 0 and out == "" and "no versions match" in err


def test_commit_lineage_options_and_lineage_command(cli):
    (cli.tmp / "data.csv").write_text("x,y\n1,2\n")
    cli.version(1)
    d = cli.tmp / "ft"
    d.mkdir()
    (d / "w.txt").write_text("ft")
    code, out, err = cli(
        "commit",
        "bert-ft",
        str(d),
        "-m",
        "fine-tune",
        "--base",
        "bert@v1",
        "--dataset",
        "train=data.csv",
        "--dataset",
        "eval=hf:sst2",
        "--store-dataset",
        "--no-code",
    )
    assert code == 0, err
    code, out, _ = cli("show", "bert-ft@v1", "--json")
    ds = json.loads(out)["datasets"]
    assert ds["train"]["version"] == "datasets/train@v1" and ds["eval"] == {"id": "hf:sst2"}
    code, out, _ = cli("show", "bert-ft@v1")
    assert "(stored as datasets/train@v1)" in out and "eval = hf:sst2" in out
    code, out, _ = cli("lineage", "bert-ft@v1")
    lines = out.splitlines()
    assert lines[0].startswith("bert-ft@v1 ")
    assert any(x.startswith("├── base: bert@v1 ") for x in lines)
    assert any("dataset train (data.csv blake3:" in x for x in lines)
    code, out, _ = cli("lineage", "bert-ft@v1", "--json", "--depth", "1")
    doc = json.loads(out)
    assert set(doc) == {"root", "nodes", "edges", "truncated"}
    assert {e["kind"] for e in doc["edges"]} == {"base", "dataset"}
    code, _, err = cli("commit", "x", str(d), "-m", "m", "--dataset", "noequals")
    assert code == 2 and "NAME=PATH" in err
