"""push, clone and pull against a ``tvc server`` on loopback: seconds, MB/s, bytes on the wire
against bytes added to the receiving store, and peak RSS of the client and of the server.

A generated FP32 safetensors model (``--size-mb``) and a fine-tune of it (``--changed`` of its
tensors perturbed) are committed to a registry; then, ``--runs`` times, each into a fresh
server: ``tvc push`` of the base version, ``tvc push`` of the fine-tune, ``tvc clone`` of the
server into a fresh directory. Every tvc step is a cold ``tvc`` process; medians are printed.

    .venv/bin/python bench/remote_bench.py --size-mb 1000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

TVC = [sys.executable, "-m", "tvc"]
READ_ONE = (
    "import sys, tvc; r = tvc.Registry(sys.argv[1]); "
    "print(r.open('m@v1').tensor('layers.0.weight').shape)"
)


def make_model(path: Path, size_mb: int, changed: float, seed: int = 0, base=None) -> dict:
    rng = np.random.default_rng(seed)
    width = 2048
    n = max(1, size_mb * 1_000_000 // (width * width * 4))
    tensors = {}
    for i in range(n):
        name = f"layers.{i}.weight"
        if base is not None:
            w = base[name]
            if rng.random() < changed:
                w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-4
        else:
            w = rng.standard_normal((width, width)).astype(np.float32) * 0.02
        tensors[name] = w
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    return tensors


def make_pair(work: Path, size_mb: int, changed: float) -> None:
    base = make_model(work / "v1", size_mb, 0)
    make_model(work / "v2", size_mb, changed, seed=1, base=base)


def tvc(*args: str, cwd: Path | None = None, env=None) -> tuple[float, int, str]:
    """(seconds, peak RSS of the process in bytes, stdout) of one cold tvc command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*TVC, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    out = proc.stdout.read().decode()
    proc.stdout.close()
    _pid, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"tvc {' '.join(args)} exited {proc.returncode}")
    return dt, usage.ru_maxrss * 1024, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_bytes(reg: Path) -> int:
    return sum(p.stat().st_size for p in (reg / ".tvc" / "objects" / "packs").glob("*/*.pack"))


def hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--changed", type=float, default=0.1)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tvc-remote-bench-"))
    env = {**os.environ, "TVC_DAEMON": "0", "TVC_AUTHOR": "bench"}
    try:
        # In a child process: this one stays small, so the children it starts (whose peak RSS
        # is measured) do not inherit a large high-water mark through fork.
        maker = multiprocessing.get_context("fork").Process(
            target=make_pair, args=(work, args.size_mb, args.changed)
        )
        maker.start()
        maker.join()
        a = work / "a"
        tvc("init", str(a), env=env)
        tvc("-R", str(a), "commit", "m", str(work / "v1"), "-m", "base", "-q", env=env)
        logical = (work / "v1" / "model.safetensors").stat().st_size
        rows: dict[str, list[dict]] = {
            "push base": [],
            "push fine-tune": [],
            "clone": [],
            "lazy clone": [],
            "lazy 1 tensor": [],
        }
        for run in range(args.runs):
            srv = work / f"srv{run}"
            tvc("init", str(srv), env=env)
            _s, _r, secret = tvc("token", "create", "bench", "--scope", "write", "--data", str(srv))
            port = free_port()
            server = subprocess.Popen(
                [*TVC, "server", "--data", str(srv), "--port", str(port)],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}"
            cenv = {**env, "TVC_TOKEN": secret.strip()}
            try:
                for _ in range(300):
                    try:
                        socket.create_connection(("127.0.0.1", port), 0.1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                # The base version, then the fine-tune (committed to a fresh copy each run).
                ar = work / f"a{run}"
                shutil.copytree(a, ar)
                before = store_bytes(srv)
                dt, rss, out = tvc("-R", str(ar), "push", url, "m", "--json", "-q", env=cenv)
                sent = json.loads(out)["bytes_sent"]
                rows["push base"].append(
                    {"s": dt, "wire": sent, "added": store_bytes(srv) - before, "rss": rss}
                )
                tvc("-R", str(ar), "commit", "m", str(work / "v2"), "-m", "ft", "-q", env=env)
                before = store_bytes(srv)
                dt, rss, out = tvc("-R", str(ar), "push", url, "m", "--json", "-q", env=cenv)
                sent = json.loads(out)["bytes_sent"]
                rows["push fine-tune"].append(
                    {"s": dt, "wire": sent, "added": store_bytes(srv) - before, "rss": rss}
                )
                dest = work / f"c{run}"
                dt, rss, out = tvc("clone", url, str(dest), "--json", "-q", env=cenv)
                sent = json.loads(out)["bytes_sent"]
                rows["clone"].append(
                    {"s": dt, "wire": sent, "added": store_bytes(dest), "rss": rss}
                )
                # A lazy clone, then one tensor read from it (bytes moved, seconds).
                dest = work / f"l{run}"
                dt, rss, out = tvc("clone", url, str(dest), "--lazy", "--json", "-q", env=cenv)
                rows["lazy clone"].append(
                    {
                        "s": dt,
                        "wire": json.loads(out)["bytes_sent"],
                        "added": store_bytes(dest),
                        "rss": rss,
                    }
                )
                before = store_bytes(dest)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", READ_ONE, str(dest)], env=cenv, check=True)
                rows["lazy 1 tensor"].append(
                    {
                        "s": time.perf_counter() - t0,
                        "wire": store_bytes(dest) - before,
                        "added": store_bytes(dest) - before,
                        "rss": 0,
                    }
                )
                server_rss = hwm(server.pid)
            finally:
                server.send_signal(signal.SIGKILL)
                server.wait()
            for r in rows.values():
                r[-1]["server_rss"] = server_rss
        print(
            f"model: {logical / 1e6:.0f} MB FP32 safetensors, fine-tune changes "
            f"{args.changed:.0%} of its tensors; {args.runs} runs, medians"
        )
        print(
            f"{'step':<16}{'s':>8}{'MB/s':>9}{'wire MB':>10}{'added MB':>10}{'wire/added':>11}"
            f"{'client RSS':>12}{'server RSS':>12}"
        )
        for step, r in rows.items():
            s = statistics.median(x["s"] for x in r)
            wire = statistics.median(x["wire"] for x in r)
            added = statistics.median(x["added"] for x in r)
            print(
                f"{step:<16}{s:>8.2f}{wire / 1e6 / s:>9.1f}{wire / 1e6:>10.1f}{added / 1e6:>10.1f}"
                f"{wire / added if added else 0:>11.3f}"
                f"{statistics.median(x['rss'] for x in r) / 2**20:>9.0f} MiB"
                f"{statistics.median(x['server_rss'] for x in r) / 2**20:>9.0f} MiB"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
