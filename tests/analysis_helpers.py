"""Real fine-tunes for the analysis tests, trained on CPU in about a second.

An MLP (fc1 → fc2 → head) is trained on scikit-learn's handwritten digits as the *base*; from
that base, ``last`` fine-tunes only the head, ``first`` only fc1, and ``last2`` the head again
on other data (so ``last`` and ``last2`` conflict). Weights are kept as numpy arrays; tests
write them as safetensors (FP32, or BF16 through torch) into model folders and commit those.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class Tunes:
    base: Weights
    last: Weights  # head only
    first: Weights  # fc1 only
    last2: Weights  # head only, other data
    accuracy: dict[str, float]


def _train(model, x, y, steps, params, seed):
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(params, lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,))
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()


def train_tunes() -> Tunes:
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    torch.manual_seed(0)
    base = torch.nn.Sequential(
        OrderedDict(
            fc1=torch.nn.Linear(64, 48),
            act1=torch.nn.ReLU(),
            fc2=torch.nn.Linear(48, 32),
            act2=torch.nn.ReLU(),
            head=torch.nn.Linear(32, 10),
        )
    )
    _train(base, x[:1200], y[:1200], 60, list(base.parameters()), seed=1)

    def tune(layer: str, rows: slice, seed: int):
        m = copy.deepcopy(base)
        _train(m, x[rows], y[rows], 30, list(getattr(m, layer).parameters()), seed=seed)
        return m

    models = {
        "base": base,
        "last": tune("head", slice(1200, None), 2),
        "first": tune("fc1", slice(1200, None), 3),
        "last2": tune("head", slice(0, 600), 4),
    }
    acc = {}
    with torch.no_grad():
        for k, m in models.items():
            acc[k] = float((m(x[1200:]).argmax(1) == y[1200:]).float().mean())
    weights = {
        k: {n: t.detach().numpy().copy() for n, t in m.state_dict().items()}
        for k, m in models.items()
    }
    return Tunes(**weights, accuracy=acc)


def write_model(
    path: Path, weights: Weights, *, bf16: bool = False, config: dict | None = None
) -> Path:
    """A Hugging Face-like folder: model.safetensors (+ config.json)."""
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt"}
    if bf16:
        import torch
        from safetensors.torch import save_file as save_torch

        save_torch(
            {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in weights.items()},
            str(path / "model.safetensors"),
            metadata=meta,
        )
    else:
        from safetensors.numpy import save_file

        save_file(weights, str(path / "model.safetensors"), metadata=meta)
    cfg = config if config is not None else {"hidden": [48, 32], "classes": 10}
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def bf16(a: np.ndarray) -> np.ndarray:
    """What a BF16 file holds for ``a``, widened back to float32 (torch rounds to nearest)."""
    import torch

    return torch.from_numpy(a).to(torch.bfloat16).to(torch.float32).numpy()
