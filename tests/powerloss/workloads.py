"""What runs on the power-loss file system until the power goes: one function per scenario.

Run as ``python workloads.py SCENARIO REGISTRY SCRATCH FIRST`` (the registry lives on the mount,
the model folders it commits are made in SCRATCH, off the mount): it opens the registry, prints
``READY``, then runs the scenario forever, printing a line for each acknowledged operation the
moment the API call returned:

``VERSION <id> <seed>``    a commit of the folder ``make_input(seed)`` makes returned this version
``MOVING <model> <alias> <id>``  an alias move is about to start (it may land unacknowledged)
``ALIAS <model> <alias> <id>``   that move returned
``DONE <what>``            a gc or an index rebuild returned (nothing to check by itself)

The first registry the scenario gets is open; one that closes it (rebuild) opens its own.

A scenario is one small function ``(reg, inputs, ack) -> None`` registered with ``@scenario``;
the test runs each registered one (see ``test_powerloss.py``).
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

MODEL = "pl"
ALIAS = "production"
LAYERS, WIDTH = 6, 128  # 390 KiB per version, two layers (128 KiB) new

SCENARIOS: dict[str, Callable] = {}


def scenario(fn: Callable) -> Callable:
    SCENARIOS[fn.__name__] = fn
    return fn


def make_input(path: Path, seed: int) -> Path:
    """A small safetensors model: a fixed base with two layers fine-tuned by ``seed``.

    Each seed stores new chunks (delta-coded against the previous version) in new packs, often
    in a new pack directory; the test regenerates the same bytes to compare.
    """
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    tensors = {}
    for layer in range(LAYERS):
        w = rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) * 0.02
        if layer in (seed % LAYERS, (seed + 2) % LAYERS):
            noise = np.random.default_rng(seed).standard_normal(w.shape).astype(np.float32)
            w = w + noise * 1e-3
        tensors[f"layers.{layer}.weight"] = w
        tensors[f"layers.{layer}.bias"] = np.zeros(WIDTH, dtype=np.float32)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"seed": str(seed)})
    (path / "config.json").write_text(json.dumps({"layers": LAYERS, "seed": seed}))
    return path


class Inputs:
    """The folders a child commits: a new one per commit, every fourth a repeat (dedup path)."""

    def __init__(self, scratch: str | Path, first: int) -> None:
        self.scratch, self.first = Path(scratch), first

    def seed(self, i: int) -> int:
        return self.first + (i - 1 if i % 4 == 3 else i)

    def path(self, seed: int) -> Path:
        p = self.scratch / f"in{seed}"
        return p if p.exists() else make_input(p, seed)

    def done(self, i: int) -> None:
        """Commit ``i`` returned: its folder goes unless commit ``i + 1`` repeats it."""
        if self.seed(i + 1) != self.seed(i):
            shutil.rmtree(self.scratch / f"in{self.seed(i)}", ignore_errors=True)


def commit_one(reg, inputs: Inputs, i: int, ack) -> str:
    seed = inputs.seed(i)
    v = reg.commit(MODEL, [inputs.path(seed)], f"commit {seed}", params={"seed": seed}).version
    ack("VERSION", v.id, seed)
    inputs.done(i)
    return v.id


def rebuild_index(reg) -> Callable[[Path], object] | None:
    """``Registry.rebuild_index(path)`` (``tvc fsck --rebuild-index``), or None without it."""
    run = getattr(type(reg), "rebuild_index", None)
    return run if callable(run) else None


@scenario
def commit(reg, inputs, ack):
    """Back-to-back commits: new packs, new pack directories, WAL growth and checkpoints."""
    for i in itertools.count():
        commit_one(reg, inputs, i, ack)


@scenario
def gc(reg, inputs, ack):
    """Commits with a gc after each: it deletes the packs and temp files killed commits left."""
    for i in itertools.count():
        commit_one(reg, inputs, i, ack)
        reg.gc()
        ack("DONE", "gc")


@scenario
def alias(reg, inputs, ack):
    """Alias moves between acknowledged versions, a commit now and then."""
    rng = random.Random()
    versions = [v.id for v in reg.log(MODEL, 1000)] if reg.models() else []
    for i in itertools.count():
        if len(versions) < 2 or i % 6 == 0:
            versions.append(commit_one(reg, inputs, i, ack))
        target = rng.choice(versions)
        ack("MOVING", MODEL, ALIAS, target)
        reg.alias(MODEL, ALIAS, target, reason=f"move {i}")
        ack("ALIAS", MODEL, ALIAS, target)


@scenario
def rebuild(reg, inputs, ack):
    """Index rebuilds between commits, as documented: with nothing else using the registry."""
    run, root = rebuild_index(reg), reg.root
    for i in itertools.count():
        commit_one(reg, inputs, i, ack)
        reg.close()
        run(root)
        ack("DONE", "rebuild")
        reg = type(reg)(root)


def main(argv: list[str]) -> None:
    import tvc

    name, registry, scratch, first = argv
    reg = tvc.Registry(registry)
    inputs = Inputs(scratch, int(first))

    def ack(*fields) -> None:
        print(*fields, flush=True)

    ack("READY")
    SCENARIOS[name](reg, inputs, ack)


if __name__ == "__main__":
    main(sys.argv[1:])
