"""`make bench-serve`: what `tvc serve` costs over its model, in one run.

1. Per flavor (sklearn, onnx, torch, python), the same model and the same request (4 rows):
   its native runtime in-process, a bare FastAPI endpoint (uvicorn, JSON in and out, no
   checks) and `tvc serve` (OIP v2, checks, metrics, the follower) — requests/s, p50 and p99
   of sequential requests from one client on loopback, and the overhead ratio to bare FastAPI.
2. `tvc rollback` → the first answer from the version it rolls back to, while 2 client threads
   send requests: from the start of the `tvc rollback` process and from its exit.
3. With `--ray-address HOST:PORT` (a running cluster): `tvc serve --ray` with 1 and 2
   replicas, requests/s of 4 client threads.

Medians of `--runs` rounds; nothing is asserted. The machine is shared: read ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import tvc  # noqa: E402
from serving_helpers import (  # noqa: E402
    export_dir,
    onnx_dir,
    python_dir,
    sklearn_dir,
    training_data,
)
from tvc.serving import flavors  # noqa: E402

ROWS = training_data()[0][:4]
BARE = """
import json, sys
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from tvc.serving import flavors

model = flavors.load(__import__("pathlib").Path(sys.argv[1]))
app = FastAPI()

@app.post("/infer")
async def infer(request: Request):
    doc = json.loads(await request.body())
    inp = doc["inputs"][0]
    x = np.asarray(inp["data"], dtype=np.float64 if inp["datatype"] == "FP64" else np.float32)
    out = model.predict({inp["name"]: x.reshape(inp["shape"])})
    body = {k: np.asarray(v).tolist() for k, v in out.items()}
    return Response(json.dumps(body), media_type="application/json")

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process(cmd: list[str], ready_url: str, cwd: Path, env: dict | None = None):
    log = tempfile.NamedTemporaryFile(prefix="serve-bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    try:
        for _ in range(3000):
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(log.name)


def timed(call, n: int) -> dict[str, float]:
    for _ in range(min(50, n)):  # warm-up
        call()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        call()
        lat.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "rps": n / wall,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def body_for(model) -> dict:
    spec = model.inputs[0]
    x = ROWS.astype(np.float32 if spec.datatype == "FP32" else np.float64)
    return {
        "inputs": [
            {
                "name": spec.name,
                "datatype": spec.datatype,
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }, {spec.name: x}


def flavor_section(work: Path, n: int, runs: int) -> list[dict]:
    builders = {
        "sklearn": lambda d: sklearn_dir(d),
        "onnx": onnx_dir,
        "torch": export_dir,
        "python": python_dir,
    }
    results = []
    bare_py = work / "bare_app.py"
    bare_py.write_text(textwrap.dedent(BARE))
    for flavor, build in builders.items():
        reg_dir = work / f"reg-{flavor}"
        reg = tvc.Registry.init(reg_dir)
        src = build(work / f"model-{flavor}")
        reg.commit("m", [src], "bench", detect_code=False)
        reg.alias("m", "production", "v1")
        reg.close()
        model = flavors.load(src)
        body, arrays = body_for(model)
        rounds: dict[str, list] = {"native": [], "fastapi": [], "tvc": []}
        port_b, port_t = free_port(), free_port()
        bare = [sys.executable, str(bare_py), str(src), str(port_b)]
        serve = [
            sys.executable, "-m", "tvc", "serve", "m@production",
            "--port", str(port_t), "--cache", str(work / "cache"),
        ]  # fmt: skip
        with (
            process(bare, f"http://127.0.0.1:{port_b}/docs", work),
            process(serve, f"http://127.0.0.1:{port_t}/v2/health/ready", reg_dir),
            httpx.Client() as c,
        ):
            for _ in range(runs):  # interleaved rounds: the same load for all three
                native = timed(lambda m=model, a=arrays: m.predict(a), n)
                rounds["native"].append(native)
                url_b = f"http://127.0.0.1:{port_b}/infer"
                rounds["fastapi"].append(timed(lambda u=url_b, b=body: c.post(u, json=b), n))
                url_t = f"http://127.0.0.1:{port_t}/v2/models/m/infer"
                rounds["tvc"].append(timed(lambda u=url_t, b=body: c.post(u, json=b), n))
        row = {"flavor": flavor, **{k: median_of(v) for k, v in rounds.items()}}
        row["overhead_vs_fastapi_p50"] = row["tvc"]["p50_ms"] / row["fastapi"]["p50_ms"]
        results.append(row)
        print(
            f"{flavor:8s} native {row['native']['rps']:8.0f}/s p50 {row['native']['p50_ms']:6.2f}"
            f" | fastapi {row['fastapi']['rps']:5.0f}/s p50 {row['fastapi']['p50_ms']:5.2f}"
            f" p99 {row['fastapi']['p99_ms']:6.2f}"
            f" | tvc serve {row['tvc']['rps']:5.0f}/s p50 {row['tvc']['p50_ms']:5.2f}"
            f" p99 {row['tvc']['p99_ms']:6.2f}"
            f" | tvc/fastapi p50 ×{row['overhead_vs_fastapi_p50']:.2f}",
            flush=True,
        )
    return results


def rollback_section(work: Path, rounds: int) -> dict:
    reg_dir = work / "reg-rollback"
    reg = tvc.Registry.init(reg_dir)
    for i, c in enumerate((1.0, 0.01)):
        reg.commit("m", [sklearn_dir(work / f"rb-{i}", c)], "v", detect_code=False)
    reg.alias("m", "production", "v1")
    port = free_port()
    serve = [
        sys.executable, "-m", "tvc", "serve", "m@production", "--port", str(port),
        "--cache", str(work / "cache"),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    body, _ = body_for(flavors.load(work / "rb-0"))
    answers: list[tuple[float, str]] = []  # (wall-clock start, version that answered)
    stop = threading.Event()
    from_start, from_record, from_exit = [], [], []
    with process(serve, url + "/v2/health/ready", reg_dir):

        def client():
            with httpx.Client() as c:
                while not stop.is_set():
                    s = time.time()
                    r = c.post(url + "/v2/models/m/infer", json=body)
                    answers.append((s, r.headers["x-tvc-version"]))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for _ in range(rounds):
                reg.alias("m", "production", "v2")
                t_set = time.time()
                while not any(s > t_set and v == "m@v2" for s, v in answers[-20:]):
                    time.sleep(0.01)
                start = time.time()
                subprocess.run(
                    [sys.executable, "-m", "tvc", "-R", str(reg_dir), "rollback", "m",
                     "production"],
                    check=True, capture_output=True,
                )  # fmt: skip
                end = time.time()
                recorded = reg.alias_history("m", "production")[-1].at  # when the move committed
                while True:
                    got = [s for s, v in answers[-200:] if s >= recorded and v == "m@v1"]
                    if got:
                        break
                    time.sleep(0.005)
                first = min(got)
                from_start.append(first - start)
                from_record.append(first - recorded)
                from_exit.append(max(0.0, first - end))
        finally:
            stop.set()
            for t in threads:
                t.join()
    reg.close()
    out = {
        "from_rollback_start_s": statistics.median(from_start),
        "from_rollback_recorded_s": statistics.median(from_record),
        "max_from_recorded_s": max(from_record),
        "from_rollback_exit_s": statistics.median(from_exit),
        "max_from_start_s": max(from_start),
    }
    print(
        f"rollback → first answer from the old version ({rounds} rollbacks, medians):"
        f" {out['from_rollback_recorded_s']:.3f} s after the move was recorded"
        f" (max {out['max_from_recorded_s']:.3f}); {out['from_rollback_start_s']:.3f} s after"
        f" `tvc rollback` was launched (max {out['max_from_start_s']:.3f}), most of it the"
        f" command's own start; {out['from_rollback_exit_s']:.3f} s after it exited",
        flush=True,
    )
    return out


def ray_section(work: Path, address: str, n: int) -> dict:
    reg_dir = work / "reg-ray"
    reg = tvc.Registry.init(reg_dir)
    reg.commit("m", [sklearn_dir(work / "ray-m")], "v", detect_code=False)
    reg.alias("m", "production", "v1")
    reg.close()
    body, _ = body_for(flavors.load(work / "ray-m"))
    out = {}
    for replicas in (1, 2):
        port = free_port()
        cmd = [
            sys.executable, "-m", "tvc", "serve", "m@production", "--ray", "--replicas",
            str(replicas), "--port", str(port), "--cache", str(work / "cache"),
        ]  # fmt: skip
        url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        env = {"RAY_ADDRESS": address, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        with process(cmd, f"http://127.0.0.1:{port}/v2/health/ready", reg_dir, env):
            counts = []

            def client(counts=counts, url=url):
                with httpx.Client(timeout=60) as c:
                    for _ in range(20):
                        c.post(url, json=body)
                    t0 = time.perf_counter()
                    for _ in range(n):
                        c.post(url, json=body)
                    counts.append(n / (time.perf_counter() - t0))

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        out[replicas] = sum(counts)
        print(f"ray serve, {replicas} replica(s): {out[replicas]:.0f} requests/s (4 clients)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rollbacks", type=int, default=5)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--skip-flavors", action="store_true")
    args = ap.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        os.environ["TVC_DAEMON"] = "0"
        os.environ["XDG_CACHE_HOME"] = str(work / "xdg")
        if not args.skip_flavors:
            results["flavors"] = flavor_section(work, args.requests, args.runs)
        results["rollback"] = rollback_section(work, args.rollbacks)
        if args.ray_address:
            results["ray"] = ray_section(work, args.ray_address, args.requests // 4)
    out = ROOT / "bench" / ".work" / "serve_results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
