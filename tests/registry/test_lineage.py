"""Lineage: parents (also of merges), base models recursively, data sets, code — as a graph."""

from __future__ import annotations

import pytest

from tvc.cli.registry_cmds import render_lineage
from tvc.errors import UsageError


@pytest.fixture
def family(reg, commit, tmp_path):
    """pre@v1 → (base of) bert@v1 → bert@v2 (+ data set, code); bert@v3 merges v2 and exp@v1."""
    data = tmp_path / "train.csv"
    data.write_text("x,y\n1,2\n")
    pre = commit(model="pre", message="pretrained", code={"commit": "a" * 40, "dirty": False})
    v1 = commit(model="bert", message="fine-tune", base=pre.ref)
    v2 = commit(
        model="bert",
        message="more data",
        datasets={"train": str(data), "eval": "hf:sst2"},
        store_datasets=True,
        code={"commit": "b" * 40, "dirty": True, "branch": "main"},
    )
    side = commit(model="bert", message="exp", branch="exp")
    v3 = commit(model="bert", message="merge exp", merge_parents=[side.id])
    return {"pre": pre, "v1": v1, "v2": v2, "side": side, "v3": v3}


def edges(graph, key):
    return [
        (e["kind"], e["name"], graph.nodes[e["to"]].get("ref", e["to"])) for e in graph.inputs(key)
    ]


def test_graph_edges(reg, family):
    f = family
    g = reg.lineage(f["v3"].ref)
    assert g.root == f["v3"].id
    assert edges(g, f["v3"].id) == [
        ("parent", "first", "bert@v2"),
        ("parent", "#2", f["side"].ref),
    ]
    # the exp branch started from main's head at the time
    assert edges(g, f["side"].id) == [("parent", "first", "bert@v2")]
    v2_inputs = edges(g, f["v2"].id)
    assert ("parent", "first", "bert@v1") in v2_inputs
    assert ("dataset", "train", "datasets/train@v1") in v2_inputs
    assert ("dataset", "eval", "dataset:hf:sst2") in v2_inputs
    assert ("code", None, f"code:{'b' * 40}+dirty") in v2_inputs
    assert edges(g, f["v1"].id) == [("base", None, "pre@v1")]
    assert edges(g, f["pre"].id) == [("code", None, f"code:{'a' * 40}")]
    train_edge = next(e for e in g.inputs(f["v2"].id) if e["name"] == "train")
    assert train_edge["record"]["size"] == 8
    doc = g.to_json()
    assert {n["kind"] for n in doc["nodes"]} == {"version", "dataset", "code"}
    assert doc["truncated"] == []


def test_depth_limits_version_levels(reg, family):
    g = reg.lineage(family["v3"].ref, depth=1)
    assert set(g.truncated) == {family["v2"].id, family["side"].id}
    assert family["v1"].id not in g.nodes
    assert reg.lineage(family["v3"].ref, depth=0).edges == []
    with pytest.raises(UsageError):
        reg.lineage(family["v3"].ref, depth=-1)


def test_render_tree(reg, family):
    lines = render_lineage(reg.lineage("bert@v2"))
    text = "\n".join(lines)
    assert lines[0].startswith(f"bert@v2 {family['v2'].short_id} [created] more data")
    assert "├── parent: bert@v1" in text
    assert "│   └── base: pre@v1" in text
    assert "code: git aaaaaaaaaaaa" in text
    assert "dataset train (" in text and "train.csv blake3:" in text
    assert "datasets/train@v1" in text
    assert "dataset eval: hf:sst2" in text
    assert "code: git bbbbbbbbbbbb (dirty) main" in text


def test_shared_ancestors_shown_once(reg, family):
    text = "\n".join(render_lineage(reg.lineage(family["v3"].ref)))
    assert text.count("base: pre@v1") == 1
    assert "(see above)" in text
