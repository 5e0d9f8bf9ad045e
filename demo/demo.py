"""The tvc story, end to end, on the embedded default (SQLite + local packs, no server).

Trains a small MLP on scikit-learn's handwritten digits (a real data set shipped with the
package), commits it with its parameters and metrics, fine-tunes the last layer and commits
again (only the changed tensors are stored), then shows the history, one version in full, a
checkout verified byte for byte, and what the store saved. Every step is a real `tvc` command.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "demo-out"
TVC = [sys.executable, "-m", "tvc"]


def sh(*args: str, show: bool = True) -> str:
    """Run a tvc command in the demo registry and echo it like a terminal session."""
    cmd = [*TVC, *args]
    if show:
        print(f"\n$ tvc {shlex.join(args)}", flush=True)
    res = subprocess.run(cmd, cwd=WORK, capture_output=True, text=True)
    if show and res.stdout:
        print(res.stdout.rstrip())
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        raise SystemExit(f"demo step failed: tvc {shlex.join(args)}")
    return res.stdout


def heading(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}")


# -- a real model, trained with numpy --------------------------------------------------------
def init_params(rng: np.random.Generator, sizes: list[int]) -> dict[str, np.ndarray]:
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        params[f"layers.{i}.weight"] = (rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(
            np.float32
        )
        params[f"layers.{i}.bias"] = np.zeros(b, dtype=np.float32)
    return params


def forward(params, x):
    acts = [x]
    n = len(params) // 2
    for i in range(n):
        z = acts[-1] @ params[f"layers.{i}.weight"] + params[f"layers.{i}.bias"]
        acts.append(np.maximum(z, 0) if i < n - 1 else z)
    return acts


def train(params, x, y, *, epochs, lr, trainable, rng, batch=64):
    n = len(params) // 2
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            acts = forward(params, x[idx])
            logits = acts[-1]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            grad = p
            grad[np.arange(len(idx)), y[idx]] -= 1
            grad /= len(idx)
            for i in reversed(range(n)):
                gw = acts[i].T @ grad
                gb = grad.sum(axis=0)
                if i > 0:
                    grad = (grad @ params[f"layers.{i}.weight"].T) * (acts[i] > 0)
                if i in trainable:
                    params[f"layers.{i}.weight"] -= lr * gw
                    params[f"layers.{i}.bias"] -= lr * gb
    return params


def accuracy(params, x, y) -> float:
    return float((forward(params, x)[-1].argmax(axis=1) == y).mean())


def save(params, out: Path, sizes, note: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file(params, str(out / "model.safetensors"), metadata={"arch": "mlp", "note": note})
    (out / "config.json").write_text(json.dumps({"arch": "mlp", "sizes": sizes}, indent=2) + "\n")


def registry_story(params, xte, yte) -> None:
    """Model management: metrics added later, a lifecycle with a gate, aliases, a rollback,
    search, lineage and the audit trail."""

    def refused(*args: str) -> None:
        """A step tvc must refuse (exit 11: illegal transition or failed gate)."""
        print(f"\n$ tvc {shlex.join(args)}", flush=True)
        res = subprocess.run([*TVC, *args], cwd=WORK, capture_output=True, text=True)
        print(res.stderr.rstrip())
        if res.returncode != 11:
            raise SystemExit(f"demo step should have been refused: tvc {shlex.join(args)}")

    heading("Evaluation after training: a metric added to v2 (its id does not change)")
    pred = forward(params, xte)[-1].argmax(axis=1)
    worst = min(float((pred[yte == c] == c).mean()) for c in range(10))
    sh("metric", "digits-mlp@v2", f"worst_class_accuracy={worst:.4f}", "--reason", "per class")

    heading("A lifecycle with a gate: production requires accuracy >= 0.965")
    with open(WORK / ".tvc" / "config.toml", "a") as f:
        f.write('\n[gates]\nproduction = "metrics.accuracy >= 0.965"\n')
    sh("lifecycle", "states")
    refused("lifecycle", "set", "digits-mlp@v1", "production")  # not a legal next state
    for ref in ("digits-mlp@v1", "digits-mlp@v2"):
        for state in ("training", "trained", "evaluated", "staged"):
            sh("lifecycle", "set", ref, state, show=ref.endswith("v2"))
    refused("lifecycle", "set", "digits-mlp@v1", "production")  # the gate: 0.9622 < 0.965
    sh("lifecycle", "set", "digits-mlp@v2", "production", "--reason", "passes the gate")
    sh("lifecycle", "history", "digits-mlp@v1")

    heading("Aliases: every move recorded; a rollback; the gate guards the production alias")
    sh("alias", "set", "digits-mlp", "candidate", "v1", "--reason", "baseline")
    sh("alias", "set", "digits-mlp", "candidate", "v2", "--reason", "fine-tuned head")
    sh("rollback", "digits-mlp", "candidate", "--reason", "compare with the baseline")
    sh("alias", "history", "digits-mlp", "candidate")
    sh("alias", "set", "digits-mlp", "production", "v2")
    refused("alias", "set", "digits-mlp", "production", "v1")
    sh("alias", "list", "digits-mlp")

    heading("Search, lineage, and the audit trail")
    sh("search", "metrics.accuracy >= 0.96 and state >= staged", "--order-by", "-metrics.accuracy")
    sh("search", "alias = production or tags = release-1", "--json", show=False)
    sh("lineage", "digits-mlp@v2")
    sh("audit", "digits-mlp", "-n", "6")


def main() -> None:
    t0 = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    os.environ.setdefault("TVC_AUTHOR", "demo")

    heading("A registry on the local disk")
    sh("init")

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    rng = np.random.default_rng(0)
    sizes = [64, 512, 512, 256, 10]
    params = init_params(rng, sizes)

    heading("Train an MLP on scikit-learn's digits and commit it")
    params = train(params, xtr, ytr, epochs=8, lr=0.05, trainable=range(4), rng=rng)
    acc1 = accuracy(params, xte, yte)
    save(params, WORK / "out", sizes, "baseline")
    print(f"trained: test accuracy {acc1:.4f}")
    sh(
        "commit",
        "digits-mlp",
        "out",
        "-m",
        "baseline: 8 epochs",
        "--param",
        "lr=0.05",
        "--param",
        "epochs=8",
        "--param",
        f"sizes={sizes}",
        "--metric",
        f"accuracy={acc1:.4f}",
        "--dataset",
        "digits=sklearn:load_digits",
        "-q",
    )

    heading("Fine-tune only the last layer; commit again (only changed tensors are stored)")
    params = train(params, xtr, ytr, epochs=4, lr=0.02, trainable={3}, rng=rng)
    acc2 = accuracy(params, xte, yte)
    save(params, WORK / "out", sizes, "fine-tuned head")
    print(f"fine-tuned: test accuracy {acc2:.4f}")
    sh(
        "commit",
        "digits-mlp",
        "out",
        "-m",
        "fine-tune head: 4 epochs",
        "--param",
        "lr=0.02",
        "--param",
        "epochs=4",
        "--param",
        "trainable=layers.3",
        "--metric",
        f"accuracy={acc2:.4f}",
        "-q",
    )

    heading("History, one version in full, the files of v1")
    sh("log", "digits-mlp")
    sh("show", "digits-mlp@v2")
    sh("ls", "digits-mlp@v1")

    heading("What the fine-tune changed, tensor by tensor; who last changed each tensor")
    sh("diff", "digits-mlp@v1", "digits-mlp@v2")
    sh("blame", "digits-mlp@v2", "model.safetensors")

    heading("Branch, tag, and a checkout of v1, verified against the original bytes")
    sh("branch", "digits-mlp", "exp-wide", "--from", "v1")
    sh("tag", "digits-mlp", "release-1", "v2")
    v1_bytes = None
    save(init_params(np.random.default_rng(1), sizes), WORK / "scratch", sizes, "x")
    sh("checkout", "digits-mlp@v1", "restore", "-q")
    sh("cat", "digits-mlp@release-1", "config.json")
    v1 = json.loads(sh("show", "digits-mlp@v1", "--json", show=False))
    restored = WORK / "restore" / "model.safetensors"
    from tvc.store.hashing import digest

    v1_bytes = restored.read_bytes()
    want = next(f["digest"] for f in v1["files"] if f["path"] == "model.safetensors")
    assert digest(v1_bytes) == want, "checkout is not bit-exact"
    print(f"restore/model.safetensors: blake3 {want[:16]}… matches v1")

    registry_story(params, xte, yte)

    heading("What the store holds, and a full verification")
    sh("stats")
    sh("fsck", "--read-data", "-q")
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s; registry in {WORK}")
    status = json.loads(sh("daemon", "status", "--json", show=False))
    if any(h["current"] for h in status["helpers"]):
        print(
            "The tvc helper that made every command after the first one fast stays up until "
            f"{int(status['helpers'][0].get('idle', 600))} s pass without a command; "
            "`tvc daemon stop` ends it now."
        )


if __name__ == "__main__":
    main()
