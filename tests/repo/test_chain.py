"""A chain of 50 fine-tune versions reads back bit-exact, with bounded delta chains."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import save_file

from tvc.store.chunkstore import MAX_DELTA_DEPTH
from tvc.store.index import chunks as chunks_t


def test_fifty_version_chain_reads_back_bit_exact(registry, tmp_path):
    rng = np.random.default_rng(50)
    weights = {
        "emb": rng.standard_normal((512, 128)).astype(np.float32),
        "w1": rng.standard_normal((128, 128)).astype(np.float32),
        "w2": (rng.standard_normal((128, 64)) * 0.1).astype(np.float32),
    }
    out = tmp_path / "out"
    out.mkdir()
    expected = []
    for step in range(50):
        for name in ("w1", "w2") if step % 2 else ("w2",):  # a small step on some tensors
            w = weights[name]
            weights[name] = (w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3).astype(
                np.float32
            )
        save_file(weights, str(out / "model.safetensors"))
        registry.commit("chain", [out], f"step {step}")
        expected.append((out / "model.safetensors").read_bytes())

    for number, data in enumerate(expected, start=1):
        assert registry.read(f"chain@v{number}", "model.safetensors") == data
    with registry.engine.connect() as conn:
        depths = [d for (d,) in conn.execute(chunks_t.select().with_only_columns(chunks_t.c.depth))]
    assert max(depths) <= min(1, MAX_DELTA_DEPTH)  # deltas are coded against keyframes
    assert sum(d > 0 for d in depths) > 50, "fine-tune steps should be stored as deltas"
    assert registry.fsck(read_data=True)["ok"]
    st = registry.stats()
    assert st["saved"]["delta"] > 0 and st["stored_bytes"] < 0.5 * st["logical_bytes"]
