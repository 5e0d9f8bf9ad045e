"""A registry of real fine-tunes for the UI tests, made at test time in a few seconds.

A small PyTorch MLP is trained on synthetic blobs (the base model), then fine-tuned on a shifted
task the ways people do it — every layer, the head only, a learning-rate sweep on a branch, a
weight merge back — and each result is committed as safetensors with its params, measured
accuracy and loss, data set, code commit and base model. Then the registry gets what a team's
registry has: aliases, lifecycle states, a metric added after the fact, a gate.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

import tvc
from tvc.repo.meta import acting_as

GATE = 'production = "metrics.eval_acc >= 0.9"\n'


def _data(seed: int, shift: float, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 16, generator=g) * 2.0
    y = torch.randint(0, 4, (n,), generator=g)
    x = centers[y] + torch.randn(n, 16, generator=g) * 2.2 + shift
    return x, y


def _mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 48),
        torch.nn.ReLU(),
        torch.nn.Linear(48, 48),
        torch.nn.ReLU(),
        torch.nn.Linear(48, 4),
    )


def _train(model, data, steps: int, lr: float, only_head: bool = False) -> None:
    x, y = data
    params = model[4].parameters() if only_head else model.parameters()
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()


def _measure(model, data) -> dict[str, float]:
    x, y = data
    with torch.no_grad():
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y).item()
        acc = (out.argmax(1) == y).float().mean().item()
    return {"acc": round(acc, 4), "loss": round(loss, 4)}


def _save(model, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors")
    )
    (out / "config.json").write_text('{"layers": [16, 48, 48, 4]}\n')
    return out


def build(root: Path) -> Path:
    """The registry at ``root/reg``, every version and event by ``alice`` (whatever
    TVC_AUTHOR other tests of the session set); returns ``root/reg``."""
    with acting_as("alice"):
        return _build(root)


def _build(root: Path) -> Path:
    reg = tvc.Registry.init(root / "reg")
    with open(root / "reg" / ".tvc" / "config.toml", "a") as f:
        f.write("\n[gates]\n" + GATE)
    reg.close()
    reg = tvc.Registry(root / "reg")
    base_task, new_task = _data(1, 0.0), _data(2, 0.7)
    csv = root / "task.csv"
    csv.write_text("".join(f"{int(c)}\n" for c in new_task[1][:64]))
    code = {"commit": "3fa9c2e1d4b5a6978877665544332211aabbccdd", "branch": "main", "dirty": False}

    base = _mlp()
    _train(base, base_task, 30, 0.05)
    reg.commit(
        "mlp-base",
        [_save(base, root / "o")],
        "pretrain 30 steps",
        params={"lr": 0.05, "steps": 30},
        metrics=_measure(base, base_task),
        code=code,
    )
    _train(base, base_task, 120, 0.05)
    reg.commit(
        "mlp-base",
        [_save(base, root / "o")],
        "pretrain 150 steps",
        params={"lr": 0.05, "steps": 150},
        metrics=_measure(base, base_task),
        code=code,
        tags=["release-1"],
    )

    ft = _mlp()
    ft.load_state_dict(base.state_dict())
    _train(ft, new_task, 40, 0.02)
    common = {"datasets": {"task": str(csv)}, "code": code}
    reg.commit(
        "mlp-ft",
        [_save(ft, root / "o")],
        "fine-tune all layers",
        base="mlp-base@v2",
        params={"lr": 0.02, "steps": 40, "layers": "all"},
        metrics=_measure(ft, new_task),
        **common,
    )
    _train(ft, new_task, 60, 0.05, only_head=True)
    reg.commit(
        "mlp-ft",
        [_save(ft, root / "o")],
        "tune the head",
        params={"lr": 0.05, "steps": 60, "layers": "head"},
        metrics=_measure(ft, new_task),
        **common,
    )
    reg.branch("mlp-ft", "exp-lr", "v2")
    sweep = _mlp()
    sweep.load_state_dict(ft.state_dict())
    _train(sweep, new_task, 30, 0.003)
    reg.commit(
        "mlp-ft",
        [_save(sweep, root / "o")],
        "lr sweep 3e-3",
        branch="exp-lr",
        params={"lr": 0.003, "steps": 30, "layers": "all"},
        metrics=_measure(sweep, new_task),
        **common,
    )
    _train(ft, new_task, 20, 0.01)
    reg.commit(
        "mlp-ft",
        [_save(ft, root / "o")],
        "20 more steps",
        params={"lr": 0.01, "steps": 20, "layers": "all"},
        metrics=_measure(ft, new_task),
        **common,
    )
    merged = reg.merge(
        "mlp-ft@main", "mlp-ft@exp-lr", strategy="average", message="average main and exp-lr"
    ).version
    avg = _mlp()
    avg.load_state_dict({k: (v + sweep.state_dict()[k]) / 2 for k, v in ft.state_dict().items()})
    reg.add_metrics(merged.ref, _measure(avg, new_task), reason="measured after the merge")

    reg.set_alias("mlp-ft", "staging", "v2", reason="first candidate")
    reg.set_alias("mlp-ft", "staging", "v4", reason="better")
    for state in ("training", "trained", "evaluated"):
        reg.set_state("mlp-ft@v2", state)
    reg.set_state("mlp-ft@v4", "training")
    reg.add_metrics("mlp-ft@v2", {"eval_acc": 0.88}, reason="held-out set")
    reg.close()
    return root / "reg"
