"""A clone shows the remote's refs and, where they differ, its numbers (``origin/exp``,
``origin: v4``) in ``log`` and ``show``, after the transfer that saw them."""

from __future__ import annotations

import json

import tvc
from tvc.cli.main import main


def _commit(reg: tvc.Registry, tmp_path, text: str, branch: str = "main") -> str:
    f = tmp_path / "w.txt"
    f.write_text(text)
    return reg.commit("m", [f], text, branch=branch).id


def _refs(capsys, *argv: str) -> dict[str, list[str]]:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    docs = doc if isinstance(doc, list) else [doc]
    return {d["ref"]: [r["name"] for r in d["refs"] if r["kind"] == "remote"] for d in docs}


def test_a_clone_shows_the_remote_numbering_where_it_differs(tmp_path, capsys):
    a = tvc.Registry.init(tmp_path / "a")
    _commit(a, tmp_path, "one")
    _commit(a, tmp_path, "two")
    b = tvc.Registry.clone(tmp_path / "a", tmp_path / "b")
    assert _refs(capsys, "-R", str(b.root), "log", "m")["m@v2"] == ["origin/main"]

    x = _commit(b, tmp_path, "mine", branch="exp")  # b's v3
    y = _commit(a, tmp_path, "theirs")  # a's v3: numbers now diverge
    b.push("origin", "m@exp")
    assert a.resolve(f"m@{x[:12]}").number == 4
    b.fetch("origin")
    assert b.resolve(f"m@{y[:12]}").number == 4

    shown = _refs(capsys, "-R", str(b.root), "log", "m@exp")
    assert shown["m@v3"] == ["origin/exp", "origin: v4"]
    shown = _refs(capsys, "-R", str(b.root), "show", f"m@{y[:12]}")
    assert shown == {"m@v4": ["origin/main", "origin: v3"]}
    capsys.readouterr()
    assert main(["-R", str(b.root), "log", "m@exp", "-n", "1"]) == 0
    assert "(exp, origin/exp, origin: v4)" in capsys.readouterr().out


def test_a_transfer_to_an_unnamed_remote_records_nothing(tmp_path):
    a = tvc.Registry.init(tmp_path / "a")
    _commit(a, tmp_path, "one")
    c = tvc.Registry.init(tmp_path / "c")
    c.pull(str(tmp_path / "a"))  # a path given as is, no remote of that name
    assert not (c.dir / "remote-refs").exists()
    assert c.log("m")[0].number == 1
