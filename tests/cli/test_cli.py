"""The CLI as a user meets it: exit codes, one-line errors, --json with stable keys."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tvc.cli.main import main

from repo_helpers import make_model_dir


@pytest.fixture
def reg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_story(reg, capsys):
    make_model_dir(reg / "out", seed=1)
    code, out, _ = run(
        capsys,
        "commit",
        "bert",
        "out",
        "-m",
        "baseline",
        "--param",
        "lr=3e-5",
        "--metric",
        "acc=0.91",
        "-q",
    )
    assert code == 0 and out.startswith("bert@v1 ")
    make_model_dir(reg / "out", seed=1, changed=(2,))
    code, out, _ = run(
        capsys, "commit", "bert", "out", "-m", "2 more epochs", "--metric", "acc=0.93", "--json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["ref"] == "bert@v2"
    stored = {"logical_bytes", "new_bytes", "new_chunks", "chunks"}
    assert stored | {"ref", "id", "model", "version", "params", "metrics", "files"} <= set(doc)
    assert doc["new_bytes"] < doc["logical_bytes"] / 3

    code, out, _ = run(capsys, "log", "bert", "--json")
    log = json.loads(out)
    assert [v["version"] for v in log] == [2, 1]
    assert log[1]["params"] == {"lr": 3e-5} and log[1]["metrics"] == {"acc": 0.91}

    code, out, _ = run(capsys, "show", "bert@v2", "--json")
    show = json.loads(out)
    for key in (
        "id",
        "model",
        "version",
        "ref",
        "message",
        "author",
        "created",
        "parents",
        "params",
        "metrics",
        "datasets",
        "state",
        "size",
        "files",
        "refs",
    ):
        assert key in show
    assert {"kind": "branch", "name": "main"} in show["refs"]

    code, out, _ = run(capsys, "ls", "bert@v1", "--json")
    assert [f["path"] for f in json.loads(out)["files"]] == ["config.json", "model.safetensors"]
    code, out, _ = run(capsys, "ls", "--json")
    assert json.loads(out)[0]["model"] == "bert"

    assert run(capsys, "checkout", "bert@v1", "restore", "-q")[0] == 0
    assert (reg / "restore" / "model.safetensors").exists()
    code, out, _ = run(capsys, "cat", "bert@main", "config.json")
    assert json.loads(out)["layers"] == 6

    assert run(capsys, "branch", "bert", "exp-lr", "--from", "v1")[0] == 0
    assert run(capsys, "tag", "bert", "release-1", "v2")[0] == 0
    code, out, _ = run(capsys, "tag", "bert", "--json")
    assert json.loads(out) == [{"name": "release-1", "version": "v2", "id": show["id"]}]

    code, out, _ = run(capsys, "stats", "--json")
    st = json.loads(out)
    assert st["versions"] == 2 and st["saved"]["dedup"] > 0
    code, out, _ = run(capsys, "fsck", "--read-data", "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = run(capsys, "gc", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["dry_run"]


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["show", "nope@v1"], 4, "unknown model"),
        (["checkout", "bert@v7"], 4, "no version v7"),
        (["show", "Bad Name"], 2, "invalid"),
        (["commit", "bert", "missing-dir", "-m", "x"], 7, "no such file"),
    ],
)
def test_errors_are_one_line_with_distinct_codes(reg, capsys, argv, code, needle):
    make_model_dir(reg / "out")
    main(["commit", "bert", "out", "-m", "x", "-q"])
    capsys.readouterr()
    got, _out, err = run(capsys, *argv)
    assert got == code
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_not_a_registry(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "log", "bert")
    assert code == 3 and "tvc init" in err


def test_console_script_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tvc", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0 and "commit" in out.stdout


def test_version(capsys):
    import tvc

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"tvc {tvc.__version__}\n"


def test_stats_summary_adds_up(reg, capsys):
    """The summary's stored bytes are the table's (unique − compression − delta savings); what
    the packs hold on disk, entry headers included, is a line of its own."""
    from tvc.cli.common import human_bytes

    make_model_dir(reg / "out", seed=1)
    main(["commit", "bert", "out", "-m", "one"])
    make_model_dir(reg / "out", seed=1, changed=(2,))
    main(["commit", "bert", "out", "-m", "two"])
    capsys.readouterr()
    st = json.loads(run(capsys, "stats", "--json")[1])
    assert st["stored_bytes"] == st["unique_bytes"] - sum(
        st["saved"][k] for k in ("compression", "delta")
    )
    assert st["stored_bytes"] < st["pack_bytes"]
    _code, out, _err = run(capsys, "stats")
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["stored"].split()[1:3] == human_bytes(st["stored_bytes"]).split()
    assert lines["on"].split()[2:4] == human_bytes(st["pack_bytes"]).split()
    assert lines["bert"].split()[6:8] == human_bytes(st["models"]["bert"]["stored_bytes"]).split()


def test_commands_are_built_when_named_and_all_for_help_or_a_typo(monkeypatch, capsys):
    """The root group builds a subcommand when it is looked up; help lists every command in
    registration order, and a mistyped name still gets Click's "did you mean"."""
    from tvc.cli import main as cli_main

    monkeypatch.setattr(cli_main, "_command", None)
    root = cli_main.command()
    assert not root.commands and "commit" in root.pending
    assert main(["alias", "--help"]) == 0
    assert list(root.commands) == ["alias"]
    assert "set" in capsys.readouterr().out
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    order = [listed.index(f"\n  {name} ") for name in ("init", "commit", "checkout", "alias")]
    assert order == sorted(order) and not root.pending
    monkeypatch.setattr(cli_main, "_command", None)
    assert main(["comit"]) == 2
    assert "Did you mean 'commit'?" in capsys.readouterr().err


def test_progress_bar_appears_only_after_its_delay(monkeypatch):
    """A bar for an operation that ends within ``DELAY`` would only flash (and load Rich);
    one that runs longer shows, counting what was done before it appeared."""
    import io

    from rich.console import Console

    from tvc.cli import common

    monkeypatch.setattr(common, "err", Console(file=io.StringIO(), force_terminal=True))
    quick = common.RichProgress()
    quick.start("commit", 100)
    quick.advance(60)
    quick.finish()
    assert quick._p is None and common.err.file.getvalue() == ""

    monkeypatch.setattr(common.RichProgress, "DELAY", 0.0)
    slow = common.RichProgress()
    slow.start("commit", 100)
    slow.advance(60)
    assert slow._p is not None
    assert slow._p.tasks[0].completed == 60 and slow._p.tasks[0].total == 100
    slow.advance(40)
    assert slow._p.tasks[0].completed == 100
    slow.finish()
    assert slow._p is None
    quiet = common.RichProgress(quiet=True)
    quiet.start("commit", 100)
    quiet.advance(100)
    assert quiet._p is None
