"""Tensor diff on real fine-tunes: only the trained layers change, with the right numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis_helpers import bf16
from tvc.analysis import tensors as T
from tvc.cli.main import main


def _stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    d = b - a
    return {
        "rel_l2": np.linalg.norm(d) / np.linalg.norm(a),
        "max_abs": np.abs(d).max(),
        "cosine": a @ b / (np.linalg.norm(a) * np.linalg.norm(b)),
        "changed_elements": int(np.count_nonzero(d)),
    }


def _check_numbers(td, a, b):
    want = _stats(a, b)
    assert td.rel_l2 == pytest.approx(want["rel_l2"], rel=1e-12)
    assert td.max_abs == pytest.approx(want["max_abs"], rel=1e-12)
    assert td.cosine == pytest.approx(want["cosine"], rel=1e-12)
    assert td.changed_elements == want["changed_elements"]
    assert td.numel == a.size


@pytest.fixture
def two(reg, folder, tunes):
    """mlp@v1 = base, mlp@v2 = head fine-tuned (with other params, metrics, config)."""
    reg.commit(
        "mlp",
        [folder(tunes.base)],
        "base",
        params={"lr": 0.01, "steps": 60},
        metrics={"acc": tunes.accuracy["base"]},
    )
    cfg = {"hidden": [48, 32], "classes": 10, "tuned": "head"}
    reg.commit(
        "mlp",
        [folder(tunes.last, config=cfg)],
        "tune head",
        params={"lr": 0.01, "steps": 30, "frozen": "fc1,fc2"},
        metrics={"acc": tunes.accuracy["last"], "f1": 0.9},
    )
    return reg


def test_only_the_trained_layer_changes_with_numpy_numbers(two, tunes):
    d = two.diff("mlp@v1", "mlp@v2")
    status = {t.name: t.status for t in d.tensors}
    assert status == {
        "fc1.weight": "unchanged",
        "fc1.bias": "unchanged",
        "fc2.weight": "unchanged",
        "fc2.bias": "unchanged",
        "head.weight": "changed",
        "head.bias": "changed",
    }
    for name in ("head.weight", "head.bias"):
        _check_numbers(d.tensor(name), tunes.base[name], tunes.last[name])
    assert d.summary() == "6 tensors: 4 unchanged, 2 changed, 0 added, 0 removed"
    assert {f.path: f.status for f in d.files} == {
        "config.json": "changed",
        "model.safetensors": "changed",
    }


def test_unchanged_tensors_are_recognized_without_reading_them(two, monkeypatch):
    read: list[str] = []
    real = two.store.read

    def spy(cid, info=None, known=None, **kw):
        read.append(cid)
        return real(cid, info, known, **kw)

    monkeypatch.setattr(two.store, "read", spy)
    a, b = two.resolve("mlp@v1"), two.resolve("mlp@v2")
    fa = two.manifest(a.files[1].manifest_id)
    chunks = fa.tensor_chunks()
    unchanged = {c for n in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias") for c in chunks[n]}

    d = two.diff("mlp@v1", "mlp@v2", path="model.safetensors", stats=False)
    assert [t.status for t in d.tensors].count("unchanged") == 4
    assert read == []  # statuses come from manifests alone

    two.diff("mlp@v1", "mlp@v2")
    assert read and not unchanged & set(read)
    fb = two.manifest(b.files[1].manifest_id).tensor_chunks()
    head = set(chunks["head.weight"] + fb["head.weight"] + chunks["head.bias"] + fb["head.bias"])
    assert head <= set(read)


def test_params_metrics_and_config_diff(two):
    d = two.diff("mlp@v1", "mlp@v2")
    params = {p.key: (p.status, p.a, p.b) for p in d.params}
    assert params == {
        "frozen": ("added", None, "fc1,fc2"),
        "lr": ("unchanged", 0.01, 0.01),
        "steps": ("changed", 60, 30),
    }
    metrics = {m.key: m.status for m in d.metrics}
    assert metrics == {"acc": "changed", "f1": "added"}
    text = next(f for f in d.files if f.path == "config.json").text_diff
    assert text.startswith("--- a/config.json\n+++ b/config.json\n")
    assert '+  "tuned": "head"\n' in text and '-  "classes": 10\n' in text
    assert next(f for f in d.files if f.path == "model.safetensors").text_diff is None


def test_bf16_fine_tune(reg, folder, tunes):
    reg.commit("mlp", [folder(tunes.base, bf16=True)], "base")
    reg.commit("mlp", [folder(tunes.last, bf16=True)], "tune head")
    d = reg.diff("mlp@v1", "mlp@v2")
    changed = {t.name for t in d.tensors if t.status == "changed"}
    assert changed == {"head.weight", "head.bias"}
    for name in changed:
        td = d.tensor(name)
        assert td.dtype_a == td.dtype_b == "BF16"
        _check_numbers(td, bf16(tunes.base[name]), bf16(tunes.last[name]))


def test_added_removed_shape_and_dtype_changes(reg, folder, tunes):
    reg.commit("mlp", [folder(tunes.base)], "base")
    rng = np.random.default_rng(0)
    w = dict(tunes.last)
    del w["fc2.bias"]
    w["extra.scale"] = np.ones(4, dtype=np.float32)
    w["head.weight"] = rng.standard_normal((12, 32)).astype(np.float32)  # 12 classes now
    w["fc1.bias"] = tunes.base["fc1.bias"].astype(np.float64)
    reg.commit("mlp", [folder(w)], "new head")
    d = reg.diff("mlp@v1", "mlp@v2")
    status = {t.name: t.status for t in d.tensors}
    assert status == {
        "fc1.weight": "unchanged",
        "fc1.bias": "dtype_changed",
        "fc2.weight": "unchanged",
        "fc2.bias": "removed",
        "head.weight": "shape_changed",
        "head.bias": "changed",
        "extra.scale": "added",
    }
    assert d.tensor("head.weight").shape_a == (10, 32)
    assert d.tensor("head.weight").shape_b == (12, 32)
    fc1b = d.tensor("fc1.bias")  # F32 → F64 of the same values: no change in value
    assert (fc1b.dtype_a, fc1b.dtype_b, fc1b.l2, fc1b.cosine) == ("F32", "F64", 0.0, 1.0)
    assert d.summary() == (
        "7 tensors: 2 unchanged, 1 changed, 1 added, 1 removed, 2 shape/dtype changed"
    )


def test_across_models_fine_tune_vs_base(reg, folder, tunes):
    reg.commit("base-mlp", [folder(tunes.base)], "base")
    reg.commit("ft", [folder(tunes.first)], "tune fc1", base="base-mlp@v1")
    d = reg.diff("ft@v1", "base-mlp@v1")
    assert {t.name for t in d.tensors if t.status != "unchanged"} == {"fc1.weight", "fc1.bias"}
    _check_numbers(d.tensor("fc1.weight"), tunes.first["fc1.weight"], tunes.base["fc1.weight"])
    assert d.to_json()["a"]["model"] == "ft" and d.to_json()["b"]["model"] == "base-mlp"


def test_streamed_blocks_give_the_same_numbers(two, monkeypatch, tunes):
    whole = two.diff("mlp@v1", "mlp@v2").tensor("head.weight")
    monkeypatch.setattr(T, "BLOCK_ELEMENTS", 7)  # 320 elements in 46 ragged blocks
    pieces = two.diff("mlp@v1", "mlp@v2").tensor("head.weight")
    assert pieces.rel_l2 == pytest.approx(whole.rel_l2, rel=1e-12)
    assert pieces.cosine == pytest.approx(whole.cosine, rel=1e-12)
    assert (pieces.max_abs, pieces.changed_elements) == (whole.max_abs, whole.changed_elements)


def test_a_tensor_larger_than_one_chunk(reg, folder):
    """1.2 M elements: two store pieces; a change in the second piece only."""
    rng = np.random.default_rng(1)
    big = rng.standard_normal(1_200_000).astype(np.float32)
    reg.commit("big", [folder({"w": big})], "v1")
    changed = big.copy()
    changed[1_100_000:1_100_010] += 1.0
    reg.commit("big", [folder({"w": changed})], "v2")
    assert len(reg.manifest(reg.resolve("big@v1").files[1].manifest_id).tensor_chunks()["w"]) == 2
    td = reg.diff("big@v1", "big@v2").tensor("w")
    _check_numbers(td, big, changed)


def test_path_filter_and_unknown_refs(two):
    d = two.diff("mlp@v1", "mlp@v2", path="config.json")
    assert [f.path for f in d.files] == ["config.json"] and d.tensors == []
    from tvc.errors import UnknownRefError

    with pytest.raises(UnknownRefError):
        two.diff("mlp@v1", "mlp@v9")


def test_cli_human_and_json(two, capsys, monkeypatch):
    monkeypatch.chdir(two.root)
    assert main(["diff", "mlp@v1", "mlp@v2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "6 tensors: 4 unchanged, 2 changed, 0 added, 0 removed" in lines
    table = [ln for ln in lines if ln.startswith("changed ")]
    assert [ln.split()[1] for ln in table] == sorted(
        ["head.weight", "head.bias"],
        key=lambda n: -two.diff("mlp@v1", "mlp@v2").tensor(n).rel_l2,
    )
    assert "fc1.weight" not in out and '+  "tuned": "head"' in out
    assert main(["diff", "mlp@v1", "mlp@v2", "--all"]) == 0
    assert "fc1.weight" in capsys.readouterr().out

    assert main(["diff", "mlp@v1", "mlp@v2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["a", "b", "summary", "files", "tensors", "params", "metrics", "datasets"]
    assert doc["summary"]["tensors"]["changed"] == 2
    assert set(doc["tensors"][0]) == {
        "path",
        "name",
        "status",
        "dtype_a",
        "dtype_b",
        "shape_a",
        "shape_b",
        "numel",
        "changed_elements",
        "l2",
        "rel_l2",
        "max_abs",
        "cosine",
        "norm_a",
        "norm_b",
    }
    assert set(doc["files"][0]) == {"path", "status", "a", "b", "text_diff"}
    assert set(doc["params"][0]) == {"key", "status", "a", "b"}
    assert main(["diff", "mlp@v1", "nope@v1"]) == 4


@pytest.mark.parametrize("n", [3, 30])
def test_reading_changed_tensors_takes_no_query_each(reg, tmp_path, n):
    """The chunk index rows of every changed tensor are read in one batch before the numbers
    are computed: a diff of 30 changed tensors runs as many statements as one of 3."""
    import sqlalchemy as sa
    from safetensors.numpy import save_file

    rng = np.random.default_rng(n)
    weights = {f"layer{i}.weight": rng.standard_normal(64).astype(np.float32) for i in range(n)}
    for step in range(2):
        save_file(weights, str(tmp_path / "model.safetensors"))
        reg.commit("wide", [tmp_path / "model.safetensors"], f"step {step}", detect_code=False)
        weights = {k: v + np.float32(1) for k, v in weights.items()}
    statements: list[str] = []
    sa.event.listen(reg.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    d = reg.diff("wide@v1", "wide@v2")
    assert sum(t.status == "changed" for t in d.tensors) == n
    assert all(t.rel_l2 is not None and t.rel_l2 > 0 for t in d.tensors)
    reads = [st for st in statements if "FROM chunks" in st]
    assert len(reads) <= 2, reads  # the changed tensors' rows, then their delta bases if any
