"""Alias moves and rollbacks while a multi-GB commit of another model runs.

The foundation issue's goal: a rollback is as fast during a large commit as without one, since
only the metadata transaction is serialized. Each figure is a cold `tvc` process (no helper),
as a user or a deploy script meets it: `tvc alias set served production vN` and `tvc rollback
served production`, alternately, with nothing else running and then while `tvc commit big FILE`
stores FILE (a safetensors file of random FP32 tensors, or the bench's 4.5 GB file when given).

    python bench/locks_bench.py [--file PATH] [--gb 1.2] [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

TVC = [sys.executable, "-m", "tvc"]


def make_file(path: pathlib.Path, gb: float) -> None:
    """A safetensors file of random FP32 tensors (64 MiB each): incompressible mantissas, so
    the commit does its full work of hashing and encoding."""
    n = max(1, int(gb * 1e9 / (64 << 20)))
    header = {}
    offset = 0
    for i in range(n):
        header[f"w{i}"] = {
            "dtype": "F32",
            "shape": [4096, 4096],
            "data_offsets": [offset, offset + (64 << 20)],
        }
        offset += 64 << 20
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for _ in range(n):
            f.write(rng.standard_normal(16 << 20, dtype=np.float32).tobytes())


def tvc(root: pathlib.Path, *args: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*TVC, "-R", str(root), "-q", *args], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def moves(
    root: pathlib.Path, repeat: int, env: dict[str, str], busy=None
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"alias set": [], "rollback": []}
    for _i in range(repeat):
        if busy is not None and busy.poll() is not None:
            break
        out["alias set"].append(tvc(root, "alias", "set", "served", "production", "v2", env=env))
        out["rollback"].append(tvc(root, "rollback", "served", "production", env=env))
    return out


def api_moves(root: pathlib.Path, repeat: int, busy=None) -> dict[str, list[float]]:
    """The same moves through the API in one long-lived process: no import cost, so what is
    left is the transaction and any wait for a lock."""
    import tvc

    out: dict[str, list[float]] = {"api alias set": [], "api rollback": []}
    with tvc.Registry(root) as reg:
        for _ in range(repeat * 5):
            if busy is not None and busy.poll() is not None:
                break
            t0 = time.perf_counter()
            reg.alias("served", "production", "v2")
            out["api alias set"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            reg.rollback("served", "production")
            out["api rollback"].append(time.perf_counter() - t0)
    return out


def bench_locks(file: pathlib.Path | None = None, gb: float = 1.2, repeat: int = 9) -> dict:
    work = pathlib.Path(tempfile.mkdtemp(prefix="tvc-locks-"))
    env = {**os.environ, "TVC_DAEMON": "0", "TVC_AUTHOR": "bench"}
    try:
        root = work / "reg"
        subprocess.run([*TVC, "init", "-q", str(root)], check=True, env=env)
        small = work / "small.txt"
        for i in range(2):
            small.write_text(f"served model v{i + 1}\n")
            subprocess.run(
                [*TVC, "-R", str(root), "-q", "commit", "served", str(small), "-m", "v"],
                check=True,
                env=env,
            )
        subprocess.run(
            [*TVC, "-R", str(root), "-q", "alias", "set", "served", "production", "v1"],
            check=True,
            env=env,
        )
        if file is None:
            file = work / "big.safetensors"
            make_file(file, gb)
        idle = moves(root, repeat, env)
        idle.update(api_moves(root, repeat))
        t0 = time.perf_counter()
        big = subprocess.Popen(
            [*TVC, "-R", str(root), "-q", "commit", "big", str(file), "-m", "big"], env=env
        )
        time.sleep(1.0)  # let it get into hashing and encoding
        busy = api_moves(root, repeat, busy=big)
        busy.update(moves(root, repeat, env, busy=big))
        still_running = big.poll() is None
        big.wait()
        commit_s = time.perf_counter() - t0
        return {
            "file_bytes": file.stat().st_size,
            "commit_seconds": round(commit_s, 2),
            "all_during_commit": still_running,
            **{
                f"{op} {when}": round(statistics.median(v), 3)
                for when, d in (("idle", idle), ("during commit", busy))
                for op, v in d.items()
                if v
            },
            "samples_during_commit": len(busy["rollback"]),
            "api_samples_during_commit": len(busy["api rollback"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=pathlib.Path)
    ap.add_argument("--gb", type=float, default=1.2)
    ap.add_argument("--repeat", type=int, default=9)
    a = ap.parse_args()
    print(json.dumps(bench_locks(a.file, a.gb, a.repeat), indent=1))


if __name__ == "__main__":
    main()
