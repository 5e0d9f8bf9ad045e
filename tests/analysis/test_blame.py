"""Blame on real fine-tunes: each tensor names the version that last changed it."""

from __future__ import annotations

import json

import pytest

from tvc.cli.main import main
from tvc.errors import UnknownRefError


@pytest.fixture
def chain(reg, folder, tunes):
    """v1 base → v2 head tuned → v3 fc1 tuned too (config unchanged since v1)."""
    reg.commit("mlp", [folder(tunes.base)], "base")
    reg.commit("mlp", [folder(tunes.last)], "tune head")
    both = {
        **tunes.last,
        "fc1.weight": tunes.first["fc1.weight"],
        "fc1.bias": tunes.first["fc1.bias"],
    }
    reg.commit("mlp", [folder(both)], "tune fc1")
    return reg


def owners(blame) -> dict[str, str]:
    return {e.name: e.version.ref for e in blame.tensors}


def test_three_version_chain(chain):
    b = chain.blame("mlp@v3")
    assert owners(b) == {
        "fc1.weight": "mlp@v3",
        "fc1.bias": "mlp@v3",
        "fc2.weight": "mlp@v1",
        "fc2.bias": "mlp@v1",
        "head.weight": "mlp@v2",
        "head.bias": "mlp@v2",
    }
    assert b.file("config.json").version.ref == "mlp@v1"
    assert b.file("model.safetensors").version.ref == "mlp@v3"
    assert b.tensor("head.weight").version.message == "tune head"
    # From an older version, history after it does not count.
    assert owners(chain.blame("mlp@v2"))["fc1.weight"] == "mlp@v1"
    assert owners(chain.blame("mlp@v3~1"))["head.bias"] == "mlp@v2"


def test_a_change_undone_is_a_change(chain, folder, tunes):
    chain.commit("mlp", [folder(tunes.base)], "back to base")
    b = chain.blame("mlp@v4")
    assert set(owners(b).values()) == {"mlp@v1", "mlp@v4"}
    assert owners(b)["head.weight"] == "mlp@v4" and owners(b)["fc2.bias"] == "mlp@v1"


def test_path_and_unknown_path(chain):
    b = chain.blame("mlp@v3", "config.json")
    assert [e.path for e in b.files] == ["config.json"] and b.tensors == []
    with pytest.raises(UnknownRefError, match=r"no file 'nope\.bin'"):
        chain.blame("mlp@v3", "nope.bin")


def test_tensors_from_a_base_model(reg, folder, tunes):
    reg.commit("base-mlp", [folder(tunes.base)], "pretrained")
    reg.commit("ft", [folder(tunes.last)], "tune head", base="base-mlp@v1")
    b = reg.blame("ft@v1")
    assert set(owners(b).values()) == {"ft@v1"}
    from_base = {e.name for e in b.tensors if e.base is not None}
    assert from_base == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert b.tensor("fc1.weight").base.ref == "base-mlp@v1"
    assert b.file("config.json").base.ref == "base-mlp@v1"  # the same bytes

    reg.commit("ft", [folder({**tunes.last, "fc1.bias": tunes.first["fc1.bias"]})], "fc1 bias")
    b2 = reg.blame("ft@v2")
    assert owners(b2)["fc1.bias"] == "ft@v2" and b2.tensor("fc1.bias").base is None
    assert owners(b2)["fc1.weight"] == "ft@v1" and b2.tensor("fc1.weight").base is not None


def test_merged_tensors_name_the_other_parent(reg, folder, tunes):
    reg.commit("mlp", [folder(tunes.base)], "base")
    reg.commit("mlp", [folder(tunes.last)], "tune head")
    reg.branch("mlp", "fc1", "v1")
    reg.commit("mlp", [folder(tunes.first)], "tune fc1", branch="fc1")
    reg.merge("mlp@main", "mlp@fc1", strategy="task-arithmetic")
    b = reg.blame("mlp@v4")
    assert owners(b)["fc1.weight"] == "mlp@v4"  # first-parent blame: the merge brought it
    assert b.tensor("fc1.weight").merged_from.ref == "mlp@v3"
    assert owners(b)["head.weight"] == "mlp@v2" and b.tensor("head.weight").merged_from is None


def test_cli(chain, capsys, monkeypatch):
    monkeypatch.chdir(chain.root)
    assert main(["blame", "mlp@v3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(ln for ln in lines if ln.split()[0] == "head.weight")
    assert head.split()[1] == "mlp@v2" and head.endswith("tune head")
    assert main(["blame", "mlp", "model.safetensors", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["ref", "id", "files", "tensors"]
    t = doc["tensors"][0]
    assert list(t) == ["path", "name", "version", "base", "merged_from"]
    assert list(t["version"]) == ["ref", "id", "short_id", "created", "author", "message"]
    assert main(["blame", "mlp@v3", "nope"]) == 4


def test_a_long_history_is_walked_window_by_window(reg, folder, tunes):
    """40 versions: the head changes every time, fc1 once at v1 and fc2 at v13 — the walk
    crosses several of its windows (8, 16, 32 versions) and blames each tensor exactly."""
    w = dict(tunes.base)
    for n in range(1, 41):
        w = {**w, "head.bias": w["head.bias"] + 0.01}
        if n == 13:
            w["fc2.bias"] = w["fc2.bias"] + 1.0
        reg.commit("long", [folder(w)], f"step {n}")
    got = owners(reg.blame("long@v40"))
    assert got["head.bias"] == "long@v40"
    assert got["fc1.weight"] == "long@v1"
    assert got["fc2.bias"] == "long@v13"
    assert got["fc2.weight"] == "long@v1"
    assert reg.blame("long@v40").file("config.json").version.ref == "long@v1"
    assert owners(reg.blame("long@v12"))["fc2.bias"] == "long@v1"
