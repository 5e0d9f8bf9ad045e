"""Real models for the serving tests, trained or built here (no hub download), and a real
``tvc serve`` subprocess on a free loopback port (tests/serving)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from server_helpers import _die_with_parent, free_port

N_FEATURES = 4


def training_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((80, N_FEATURES))
    return x, (x[:, 0] + 0.3 * x[:, 1] > 0.6).astype(np.int64)


def sklearn_dir(dest: Path, c: float = 1.0, fmt: str = "skops") -> Path:
    """A LogisticRegression trained here, saved with skops (or joblib/pickle)."""
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    est = LogisticRegression(C=c).fit(x, y)
    dest.mkdir(parents=True, exist_ok=True)
    if fmt == "skops":
        import skops.io as sio

        sio.dump(est, dest / "model.skops")
    elif fmt == "joblib":
        import joblib

        joblib.dump(est, dest / "model.joblib")
    else:
        import pickle

        (dest / "model.pkl").write_bytes(pickle.dumps(est))
    return dest


def tiny_torch(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )
    x, y = training_data(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    for _ in range(30):  # trained briefly: a real model, not random weights
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


def onnx_dir(dest: Path, seed: int = 0) -> Path:
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    net = tiny_torch(seed)
    with warnings.catch_warnings():  # the TorchScript-based exporter: no onnxscript needed
        warnings.simplefilter("ignore", DeprecationWarning)
        _export_onnx(torch, net, dest)
    return dest


def _export_onnx(torch, net, dest: Path) -> None:
    torch.onnx.export(
        net,
        (torch.zeros(1, N_FEATURES),),
        str(dest / "model.onnx"),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )


def torchscript_dir(dest: Path, seed: int = 0) -> Path:
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(tiny_torch(seed)), str(dest / "model.pt"))
    sig = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}],
    }
    (dest / "signature.json").write_text(json.dumps(sig))
    return dest


def export_dir(dest: Path, seed: int = 0) -> Path:
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        tiny_torch(seed), (torch.zeros(2, N_FEATURES),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, str(dest / "model.pt2"))
    return dest


PREDICT_PY = """
import numpy as np

INPUTS = [{"name": "x", "datatype": "FP64", "shape": [-1, %(n)d]}]
OUTPUTS = [{"name": "y", "datatype": "FP64", "shape": [-1]}]


def load(path):
    return float(open(path + "/scale.txt").read())


def predict(scale, inputs):
    return {"y": inputs["x"].sum(axis=1) * scale}
"""


def python_dir(dest: Path, scale: float = 1.0) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "predict.py").write_text(textwrap.dedent(PREDICT_PY % {"n": N_FEATURES}))
    (dest / "scale.txt").write_text(str(scale))
    return dest


@contextmanager
def running_serve(args: list[str], cwd: Path, cache: Path, env: dict | None = None):
    """``(url, process)`` of ``tvc serve ARGS`` once it is ready; SIGTERMed (then killed) after."""
    port = free_port()
    cmd = [sys.executable, "-m", "tvc", "serve", *args, "--port", str(port), "--cache", str(cache)]
    log = cache.parent / f"serve-{port}.log"
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            env={**os.environ, "TVC_DAEMON": "0", **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):  # until ready or exited (bounded: 1200 tries of <= 0.1 s)
            if proc.poll() is not None:
                raise RuntimeError(f"tvc serve exited: {log.read_text()}")
            try:
                if httpx.get(url + "/v2/health/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        else:
            raise RuntimeError(f"tvc serve did not get ready: {log.read_text()}")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.log = log.read_text()  # type: ignore[attr-defined]


def infer_body(x: np.ndarray, name: str = "input-0", datatype: str = "FP64") -> dict:
    return {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


def wait_for(predicate, timeout: float = 60.0, step: float = 0.05):
    """Poll ``predicate`` until true (a bounded wait for a state, never a fixed sleep)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {predicate}")
