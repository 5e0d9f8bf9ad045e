"""Weight merges of real fine-tunes of one base: task arithmetic, average, ours, theirs."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file

from analysis_helpers import bf16
from tvc.analysis.tensors import to_bfloat16
from tvc.cli.main import main
from tvc.errors import ConflictError, UsageError

NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight", "head.bias")


@pytest.fixture
def tree(reg, folder, tunes):
    """mlp@v1 base; main → v2 (head tuned); branch fc1 → v3 (fc1 tuned); branch head2 → v4
    (head tuned on other data: conflicts with v2)."""
    reg.commit("mlp", [folder(tunes.base)], "base")
    reg.commit("mlp", [folder(tunes.last)], "tune head")
    reg.branch("mlp", "fc1", "v1")
    reg.commit("mlp", [folder(tunes.first)], "tune fc1", branch="fc1")
    reg.branch("mlp", "head2", "v1")
    reg.commit("mlp", [folder(tunes.last2)], "tune head again", branch="head2")
    return reg


def read_all(reg, ref):
    r = reg.open(ref)
    return {n: r.tensor(n) for n in NAMES}


def test_task_arithmetic_of_disjoint_fine_tunes(tree, tunes):
    res = tree.merge("mlp@main", "mlp@fc1", strategy="task-arithmetic")
    assert res.ancestor.ref == "mlp@v1" and res.conflicts == []
    v = res.version
    assert v.ref == "mlp@v5"
    assert v.parents == (tree.resolve("mlp@v2").id, tree.resolve("mlp@v3").id)
    assert tree.resolve("mlp@main").id == v.id
    got = read_all(tree, v.ref)
    base, a, b = tunes.base, tunes.last, tunes.first
    for n in NAMES:
        want = base[n] + (a[n] - base[n]) + (b[n] - base[n])
        np.testing.assert_allclose(got[n], want, rtol=0, atol=1e-6)
        # λ = 1 and one side changed: that side's tensor, bit for bit.
        side = a if n.startswith("head") else b
        assert np.array_equal(got[n], side[n])
    assert {t.name: t.source for t in res.tensors} == {
        "fc1.weight": "b",
        "fc1.bias": "b",
        "head.weight": "a",
        "head.bias": "a",
    }
    assert res.counts() == {
        "unchanged": 2,
        "a": 2,
        "b": 2,
        "merged": 0,
        "removed": 0,
        "conflicts": 0,
    }
    assert tree.fsck(read_data=True)["ok"]


def test_merged_file_keeps_the_layout(tree, tmp_path):
    res = tree.merge("mlp@main", "mlp@fc1", strategy="task-arithmetic")
    tree.checkout(res.version.ref, tmp_path / "out")
    tree.checkout("mlp@v2", tmp_path / "a")
    merged, ours = tmp_path / "out/model.safetensors", tmp_path / "a/model.safetensors"

    def header(p):
        raw = p.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        return n, json.loads(raw[8 : 8 + n])

    (n_m, h_m), (_, h_a) = header(merged), header(ours)
    assert list(h_m) == list(h_a) and h_m["__metadata__"] == {"format": "pt"}
    assert {k: v["data_offsets"] for k, v in h_m.items() if k != "__metadata__"} == {
        k: v["data_offsets"] for k, v in h_a.items() if k != "__metadata__"
    }
    assert n_m % 8 == 0 and merged.stat().st_size == ours.stat().st_size
    assert set(load_file(str(merged))) == set(NAMES)  # the reference reader accepts it


def test_task_arithmetic_with_lambdas(tree, tunes):
    res = tree.merge("mlp@main", "mlp@fc1", strategy="task-arithmetic", lambda_a=0.5, lambda_b=0.25)
    got = read_all(tree, res.version.ref)
    base, a, b = tunes.base, tunes.last, tunes.first
    for n in NAMES:
        o = base[n].astype(np.float64)
        want = o + 0.5 * (a[n] - o) + 0.25 * (b[n] - o)
        assert np.array_equal(got[n], want.astype(np.float32)), n
    assert res.counts()["merged"] == 4 and res.conflicts == []
    assert "λ_A=0.5, λ_B=0.25" in res.version.message


def test_average_of_two_head_fine_tunes_reports_the_conflict(tree, tunes):
    res = tree.merge("mlp@main", "mlp@head2", strategy="average", message="soup")
    assert {(c.name, c.resolution) for c in res.conflicts} == {
        ("head.weight", "average"),
        ("head.bias", "average"),
    }
    got = read_all(tree, res.version.ref)
    for n in NAMES:
        if n.startswith("head"):
            want = ((tunes.last[n].astype(np.float64) + tunes.last2[n]) / 2).astype(np.float32)
        else:
            want = tunes.base[n]
        assert np.array_equal(got[n], want), n
    assert res.version.message == "soup"
    assert len(res.version.parents) == 2


@pytest.mark.parametrize(("strategy", "side"), [("ours", "mlp@v2"), ("theirs", "mlp@v4")])
def test_ours_and_theirs(tree, strategy, side):
    res = tree.merge("mlp@main", "mlp@head2", strategy=strategy)
    assert {c.resolution for c in res.conflicts} == {strategy}
    merged = {f.path: f.digest for f in res.version.files}
    # Every tensor from one side: that side's file, byte for byte.
    assert merged == {f.path: f.digest for f in tree.resolve(side).files}


def test_average_is_one_sided_where_only_one_side_changed(tree, tunes):
    res = tree.merge("mlp@main", "mlp@fc1", strategy="average")
    got = read_all(tree, res.version.ref)
    assert np.array_equal(got["fc1.weight"], tunes.first["fc1.weight"])
    assert np.array_equal(got["head.weight"], tunes.last["head.weight"])
    assert res.conflicts == []


def test_bf16_average_rounds_to_nearest_even(reg, folder, tunes):
    import torch

    reg.commit("mlp", [folder(tunes.base, bf16=True)], "base")
    reg.commit("mlp", [folder(tunes.last, bf16=True)], "head")
    reg.branch("mlp", "other", "v1")
    reg.commit("mlp", [folder(tunes.last2, bf16=True)], "head again", branch="other")
    res = reg.merge("mlp", "mlp@other", strategy="average")
    r = reg.open(res.version.ref)
    for n in ("head.weight", "head.bias"):
        a = torch.from_numpy(tunes.last[n]).to(torch.bfloat16).float()
        b = torch.from_numpy(tunes.last2[n]).to(torch.bfloat16).float()
        want = ((a + b) / 2).to(torch.bfloat16).float().numpy()  # exact in f32, then RNE
        assert np.array_equal(r.tensor(n), want), n
    assert np.array_equal(r.tensor("fc2.weight"), bf16(tunes.base["fc2.weight"]))
    assert r.manifest("model.safetensors").tensor("head.weight").dtype == "BF16"


def test_shape_mismatch_is_a_conflict_unless_ours_or_theirs(tree, folder, tunes):
    wide = {**tunes.last, "head.weight": np.zeros((12, 32), np.float32)}
    wide["head.bias"] = np.zeros(12, np.float32)
    tree.branch("mlp", "wide", "v1")
    tree.commit("mlp", [folder(wide)], "12 classes", branch="wide")
    before = tree.log("mlp@main")
    with pytest.raises(ConflictError, match=r"head\.weight: shape or dtype differs"):
        tree.merge("mlp@main", "mlp@wide", strategy="average")
    with pytest.raises(ConflictError):
        tree.merge("mlp@main", "mlp@wide", strategy="task-arithmetic", lambda_a=0.5)
    assert tree.log("mlp@main") == before  # nothing committed
    res = tree.merge("mlp@main", "mlp@wide", strategy="theirs")
    assert tree.open(res.version.ref).tensor("head.weight").shape == (12, 32)


def test_opaque_file_changed_on_both_sides(tree, folder, tunes):
    tree.branch("mlp", "cfg", "v1")
    tree.commit(
        "mlp", [folder(tunes.base, config={"classes": 10, "note": "b"})], "cfg", branch="cfg"
    )
    tree.branch("mlp", "cfg2", "v2")
    tree.commit(
        "mlp", [folder(tunes.last, config={"classes": 10, "note": "a"})], "c", branch="cfg2"
    )
    with pytest.raises(ConflictError, match=r"config\.json: both sides changed"):
        tree.merge("mlp@cfg2", "mlp@cfg", strategy="average")
    res = tree.merge("mlp@cfg2", "mlp@cfg", strategy="average", file_strategy="theirs")
    assert json.loads(tree.read(res.version, "config.json"))["note"] == "b"
    assert res.files[0].conflict and res.files[0].resolution == "theirs"


def test_fine_tunes_of_one_base_model_meet_through_base_links(reg, folder, tunes):
    reg.commit("base-mlp", [folder(tunes.base)], "pretrained")
    reg.commit("ft-a", [folder(tunes.last)], "head", base="base-mlp@v1")
    reg.commit("ft-b", [folder(tunes.first)], "fc1", base="base-mlp@v1")
    res = reg.merge("ft-a", "ft-b", strategy="task-arithmetic")
    assert res.ancestor.ref == "base-mlp@v1"
    assert res.version.ref == "ft-a@v2"
    assert res.version.parents == (reg.resolve("ft-a@v1").id, reg.resolve("ft-b@v1").id)
    r = reg.open("ft-a@v2")
    assert np.array_equal(r.tensor("fc1.weight"), tunes.first["fc1.weight"])
    assert np.array_equal(r.tensor("head.weight"), tunes.last["head.weight"])


def test_unrelated_models(reg, folder, tunes):
    reg.commit("x", [folder(tunes.last)], "x")
    reg.commit("y", [folder(tunes.last2)], "y")
    with pytest.raises(ConflictError, match="no common ancestor"):
        reg.merge("x", "y", strategy="task-arithmetic")
    res = reg.merge("x", "y", strategy="average")  # every differing tensor is a conflict
    assert res.ancestor is None and {c.name for c in res.conflicts} == {"head.weight", "head.bias"}
    assert res.counts()["unchanged"] == 4


def test_refusals_and_dry_run(tree):
    with pytest.raises(UsageError, match="not the head of a branch"):
        tree.merge("mlp@v1", "mlp@fc1", strategy="average")
    with pytest.raises(UsageError, match="unknown merge strategy"):
        tree.merge("mlp@main", "mlp@fc1", strategy="median")
    with pytest.raises(UsageError, match="already contains"):
        tree.merge("mlp@main", "mlp@v1", strategy="average")
    before = tree.log("mlp@main")
    plan = tree.merge("mlp@main", "mlp@head2", strategy="average", dry_run=True)
    assert plan.commit is None and len(plan.conflicts) == 2
    assert tree.log("mlp@main") == before
    # A version that is a branch head can be named by id; --branch picks among several.
    tree.branch("mlp", "also", "v2")
    with pytest.raises(UsageError, match="several branches"):
        tree.merge("mlp@v2", "mlp@fc1", strategy="average")
    res = tree.merge("mlp@v2", "mlp@fc1", strategy="average", branch="also")
    assert tree.resolve("mlp@also").id == res.version.id


def test_bfloat16_rounding_matches_torch():
    import torch

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.standard_normal(10_000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 10_000),
            np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40, 1e-45], np.float32),
            # exact halfway cases: 1 + 2^-8 (tie → even 1.0), 1 + 3·2^-8 (tie → up)
            np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)], np.float32),
        ]
    )
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bfloat16(x), want)
    assert np.array_equal(to_bfloat16(x.astype(np.float64)), want)
    assert np.isnan(
        torch.from_numpy(to_bfloat16(np.array([np.nan])).view(np.int16))
        .view(torch.bfloat16)
        .float()
        .numpy()
    ).all()
    # float64 just above a halfway point rounds up, though float32 would land on the tie.
    above = 1 + 2**-8 + 2**-40
    assert to_bfloat16(np.array([above]))[0] == 0x3F81
    assert to_bfloat16(np.array([1 + 2**-8]))[0] == 0x3F80


def test_cli_merge(tree, folder, tunes, capsys, monkeypatch):
    monkeypatch.chdir(tree.root)
    assert main(["merge", "mlp@main", "mlp@head2", "-s", "average", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == [
        "ref",
        "id",
        "branch",
        "message",
        "a",
        "b",
        "ancestor",
        "strategy",
        "lambda_a",
        "lambda_b",
        "summary",
        "conflicts",
        "files",
        "tensors",
        "commit",
    ]
    assert doc["ref"] == "mlp@v5" and doc["ancestor"]["ref"] == "mlp@v1"
    assert {c["name"] for c in doc["conflicts"]} == {"head.weight", "head.bias"}
    assert set(doc["tensors"][0]) == {
        "path",
        "name",
        "changed_a",
        "changed_b",
        "source",
        "conflict",
        "resolution",
        "dtype",
        "shape",
    }
    assert main(["merge", "mlp@fc1", "mlp@head2", "-s", "task-arithmetic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mlp@v6 ") and "0 conflict(s)" in out
    assert main(["merge", "mlp@main", "mlp@v1", "-s", "average"]) == 2
    assert "already contains" in capsys.readouterr().err
    tree.commit("other", [folder(tunes.last2)], "unrelated")
    assert main(["merge", "mlp@main", "other", "-s", "task-arithmetic"]) == 11
    err = capsys.readouterr().err
    assert "no common ancestor" in err and err.count("\n") == 1
    assert main(["merge", "mlp@main", "other", "-s", "nope"]) == 2


def test_deleted_on_one_side_changed_on_the_other(tree, folder, tunes):
    tree.branch("mlp", "drop", "v1")
    no_head = {k: v for k, v in tunes.base.items() if not k.startswith("head")}
    tree.commit("mlp", [folder(no_head)], "drop the head", branch="drop")
    with pytest.raises(ConflictError, match="deleted on one side and changed on the other"):
        tree.merge("mlp@main", "mlp@drop", strategy="average")
    res = tree.merge("mlp@main", "mlp@drop", strategy="theirs")
    assert "head.weight" not in {t.name for _p, t in tree.open(res.version.ref).tensors()}
    assert {t.name: t.source for t in res.tensors} == {
        "head.weight": "removed",
        "head.bias": "removed",
    }


def test_integer_tensors_average_to_the_nearest_integer(reg, folder, tunes):
    def with_steps(w, n):
        return {**w, "steps": np.array([n], dtype=np.int64)}

    reg.commit("mlp", [folder(with_steps(tunes.base, 60))], "base")
    reg.commit("mlp", [folder(with_steps(tunes.last, 91))], "head")
    reg.branch("mlp", "other", "v1")
    reg.commit("mlp", [folder(with_steps(tunes.last2, 100))], "head again", branch="other")
    res = reg.merge("mlp", "mlp@other", strategy="average")
    assert reg.open(res.version.ref).tensor("steps").tolist() == [96]  # 95.5 → even
    assert {c.name for c in res.conflicts} == {"steps", "head.weight", "head.bias"}


def test_a_tensor_only_theirs_has_joins_the_rebuilt_file(tree, folder, tunes, tmp_path):
    extra = np.arange(6, dtype=np.float32).reshape(2, 3)
    tree.branch("mlp", "extra", "v1")
    tree.commit("mlp", [folder({**tunes.last2, "adapter.w": extra})], "adapter", branch="extra")
    res = tree.merge("mlp@main", "mlp@extra", strategy="average")
    assert res.tensor("adapter.w").source == "b" and not res.tensor("adapter.w").conflict
    tree.checkout(res.version.ref, tmp_path / "out")
    loaded = load_file(str(tmp_path / "out/model.safetensors"))
    assert np.array_equal(loaded["adapter.w"], extra)
    want = ((tunes.last["head.bias"].astype(np.float64) + tunes.last2["head.bias"]) / 2).astype(
        np.float32
    )
    assert np.array_equal(loaded["head.bias"], want)
    assert np.array_equal(loaded["fc1.weight"], tunes.base["fc1.weight"])


def test_cli_strategy_list_matches_the_analysis_layer():
    from tvc.analysis.merge import STRATEGIES
    from tvc.cli.analysis import STRATEGIES as CLI_STRATEGIES

    assert CLI_STRATEGIES == STRATEGIES
