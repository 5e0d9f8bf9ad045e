"""Model folders for tests: real safetensors files made with the safetensors library."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save_file


def make_model_dir(path, seed=0, n_layers=6, width=256, changed=(), scale=1.0):
    """A Hugging Face-like folder: model.safetensors + config.json. ``changed`` layers differ."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(n_layers):
        w = rng.standard_normal((width, width)).astype(np.float32) * 0.02
        b = np.zeros(width, dtype=np.float32)
        if i in changed:
            w = (
                w
                + np.random.default_rng(1000 + i).standard_normal(w.shape).astype(np.float32) * 1e-3
            )
        tensors[f"layers.{i}.weight"] = w * scale
        tensors[f"layers.{i}.bias"] = b
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "np"})
    (path / "config.json").write_text(json.dumps({"layers": n_layers, "width": width}))
    return tensors
