"""The repo layer on a real PostgreSQL metadata DB: the same commit/checkout/fsck/gc story."""

from __future__ import annotations

from conftest_helpers import registry_on
from repo_helpers import make_model_dir


def test_core_story_on_postgresql(tmp_path, pg_url):
    reg = registry_on(pg_url, tmp_path / "reg")
    try:
        make_model_dir(tmp_path / "a", seed=1)
        make_model_dir(tmp_path / "b", seed=1, changed=(3,))
        r1 = reg.commit("m", [tmp_path / "a"], "one", params={"lr": 1e-3}, metrics={"acc": 0.5})
        r2 = reg.commit("m", [tmp_path / "b"], "two", tags=["t1"])
        assert r2.new_bytes < r1.new_bytes / 3
        assert [v.number for v in reg.log("m")] == [2, 1]
        assert reg.resolve("m@t1").id == r2.version.id
        assert reg.resolve(f"m@{r1.version.id[:8]}").params == {"lr": 1e-3}
        reg.checkout("m@v1", tmp_path / "out")
        data = (tmp_path / "a" / "model.safetensors").read_bytes()
        assert (tmp_path / "out" / "model.safetensors").read_bytes() == data
        assert reg.fsck(read_data=True)["ok"]
        first = reg.gc()  # consolidates the two small packs into one
        assert first["packs_rewritten"] == 2 and first["chunks_removed"] == 0
        assert reg.gc()["bytes_freed"] == 0
        assert reg.fsck(read_data=True)["ok"]
        assert (
            reg.read("m@v2", "model.safetensors")
            == (tmp_path / "b" / "model.safetensors").read_bytes()
        )
        assert reg.stats()["versions"] == 2
    finally:
        reg.close()
