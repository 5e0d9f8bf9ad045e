"""Scale-out under load: 32 concurrent clients push and pull different models through one or
two ``tvc server`` replicas on one PostgreSQL and one SeaweedFS bucket (all on loopback).

Standalone: ``.venv/bin/python bench/scale_bench.py [--clients 32] [--mb 8]``. It starts the
services itself (``demo/cluster_services.py``) and stops them at the end. Reports, for one
replica and for two:

- push and pull MB/s (logical bytes of the models / wall time of the whole concurrent phase),
  beside the ceiling: the same bytes uploaded (and downloaded) with raw boto3 by as many
  threads to the same bucket;
- p50/p99 latency of metadata calls made while the transfers run: ``show`` and ``refs`` over
  HTTP through the replicas, and ``log``, ``show``, ``search`` and ``alias set`` on the shared
  PostgreSQL registry (what a replica runs for them; this branch's server has no HTTP search or
  alias endpoints);
- that every transfer verified (each pulled file compared with its source), errors, deadlocks.

DVC pushing the same files to the same bucket (``dvc-s3``) runs when ``bench/.work/venv-dvc-s3``
holds a dvc with S3 support; otherwise the report says it was skipped.

The clients are threads of this process (each with its own registry and HTTP connections):
on a 2-core machine 32 client processes would measure Python start-up, not the servers.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "demo"))

from cluster_services import postgresql, s3_env, seaweedfs, tvc_server  # noqa: E402

BUCKET = "tvc-bench"
MB = 1e6


def make_model(path: Path, seed: int, mb: float) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    n = int(mb * MB / 4 / 8)
    tensors = {f"layer{i}.weight": rng.standard_normal(n).astype(np.float32) for i in range(8)}
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    return path / "model.safetensors"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000 if xs else float("nan")


class Latencies:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def time(self, name: str, fn) -> None:
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:
            with self._lock:
                self.errors.append(f"{name}: {exc}")
            return
        with self._lock:
            self.samples.setdefault(name, []).append(time.perf_counter() - t)


def metadata_load(stop: threading.Event, lat: Latencies, urls, secret, reg_dir: Path) -> None:
    """Metadata calls in a loop until ``stop``: over HTTP through the replicas, and on the
    shared PostgreSQL registry directly."""
    import httpx

    import tvc

    h = {"Authorization": f"Bearer {secret}"}
    clients = [httpx.Client(base_url=u, headers=h, timeout=120) for u in urls]
    reg = tvc.Registry(reg_dir)
    i = 0
    try:
        while not stop.is_set():
            c = clients[i % len(clients)]
            lat.time(
                "http show", lambda c=c: c.get("/api/v1/versions/meta@main").raise_for_status()
            )
            lat.time("http refs", lambda c=c: c.get("/api/v1/refs").raise_for_status())
            lat.time("log", lambda: reg.log("meta", n=20))
            lat.time("show", lambda: reg.show("meta@main"))
            lat.time("search", lambda: reg.search("metrics.acc >= 0.5", limit=20))
            target = "v1" if i % 2 else "v2"
            lat.time(
                "alias set",
                lambda target=target: reg.alias("meta", "production", target, reason="bench"),
            )
            i += 1
    finally:
        reg.close()
        for c in clients:
            c.close()


def run_phase(label, n_clients, urls, secret, clients_dirs, files, reg_dir, work):
    """Push every client's model concurrently, then clone each through another replica."""
    import tvc
    from tvc.remote import open_transport, sync

    lat = Latencies()
    stop = threading.Event()
    meta = threading.Thread(target=metadata_load, args=(stop, lat, urls, secret, reg_dir))
    meta.start()
    errors: list[str] = []
    total = sum(f.stat().st_size for f in files)

    def push(i: int) -> None:
        reg = tvc.Registry(clients_dirs[i])
        try:
            with open_transport(urls[i % len(urls)], secret) as remote:
                sync.push(reg, remote, [f"{label}-m{i}"])
        finally:
            reg.close()

    def pull(i: int) -> None:
        dest = work / f"pull-{label}-{i}"
        c = tvc.Registry.clone(
            urls[(i + 1) % len(urls)], dest, token=secret, models=[f"{label}-m{i}"]
        )
        try:
            got = c.read(f"{label}-m{i}@main", "model.safetensors")
        finally:
            c.close()  # clone: through the other replica than the push (with two)
        if got != files[i].read_bytes():
            raise AssertionError(f"client {i}: pulled bytes differ")
        shutil.rmtree(dest, ignore_errors=True)

    out = {}
    for what, fn in (("push", push), ("pull", pull)):
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(n_clients) as pool:
            for fut in cf.as_completed([pool.submit(fn, i) for i in range(n_clients)]):
                try:
                    fut.result()
                except Exception as exc:
                    errors.append(f"{what}: {exc!r}")
        out[what] = total / MB / (time.perf_counter() - t)
    stop.set()
    meta.join()
    return out, lat, errors


def raw_boto3(endpoint: str, files: list[Path], threads: int) -> tuple[float, float]:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=threads,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    prefix = f"raw-{uuid.uuid4().hex[:8]}"
    total = sum(f.stat().st_size for f in files)

    def up(i: int) -> None:
        s3.upload_file(str(files[i]), BUCKET, f"{prefix}/{i}")

    def down(i: int) -> None:
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{i}")["Body"].read()

    rates = []
    for fn in (up, down):
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, range(len(files))))
        rates.append(total / MB / (time.perf_counter() - t))
    return rates[0], rates[1]


def dvc_push(endpoint: str, files: list[Path], work: Path, env: dict) -> str:
    dvc = HERE / ".work" / "venv-dvc-s3" / "bin" / "dvc"
    if not dvc.exists():
        return (
            "skipped: no dvc with S3 support in bench/.work/venv-dvc-s3 (install it with "
            "python3 -m venv bench/.work/venv-dvc-s3 && bench/.work/venv-dvc-s3/bin/pip "
            "install 'dvc[s3]': 255 s here)"
        )
    proj = work / "dvc-proj"
    proj.mkdir()
    run = lambda *a: subprocess.run(  # noqa: E731
        [str(dvc), *a], cwd=proj, env=env, check=True, capture_output=True
    )
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    run("init", "-q")
    run("remote", "add", "-d", "s3", f"s3://{BUCKET}/dvc")
    run("remote", "modify", "s3", "endpointurl", endpoint)
    run("remote", "modify", "s3", "region", "us-east-1")
    for i, f in enumerate(files):
        shutil.copy(f, proj / f"m{i}.safetensors")
    run("add", "-q", *[f"m{i}.safetensors" for i in range(len(files))])
    total = sum(f.stat().st_size for f in files)
    t = time.perf_counter()
    run("push", "-q", "-j", "32")
    return f"{total / MB / (time.perf_counter() - t):.1f} MB/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--mb", type=float, default=8.0, help="MB per model")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tvc-scale-bench-"))
    os.chmod(work, 0o755)
    os.environ.update(s3_env(work))
    os.environ.setdefault("TVC_AUTHOR", "bench")
    os.environ["TVC_DAEMON"] = "0"
    import sqlalchemy as sa

    import tvc
    from tvc.server.tokens import TokenStore

    try:
        with contextlib.ExitStack() as stack:
            pg = stack.enter_context(postgresql(work / "pg"))
            endpoint = stack.enter_context(seaweedfs(work / "weed", BUCKET))
            eng = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
            with eng.connect() as conn:
                conn.execute(sa.text('CREATE DATABASE "registry"'))
            eng.dispose()
            db = pg.rsplit("/", 1)[0] + "/registry"
            store = f"s3://{BUCKET}/registry?endpoint={endpoint}"
            reg = tvc.Registry.init(work / "a", store=store, metadata=db)
            for k in (1, 2):  # the model the metadata calls read and move aliases of
                d = work / f"meta{k}"
                d.mkdir()
                (d / "w.txt").write_text(f"weights {k}")
                reg.commit("meta", [d], f"v{k}", metrics={"acc": 0.5 + k / 10}, detect_code=False)
            reg.close()
            ts = TokenStore(work / "a" / ".tvc")
            secret = ts.create("bench", "admin")
            ts.close()
            a = stack.enter_context(tvc_server(work / "a"))
            b = stack.enter_context(tvc_server(work / "b", "--store", store, "--db", db))

            print(f"preparing {args.clients} models of {args.mb} MB …", flush=True)
            files = [make_model(work / f"src{i}", 100 + i, args.mb) for i in range(args.clients)]
            up, down = raw_boto3(endpoint, files, args.clients)
            results = {}
            for label, urls in (("one", [a]), ("two", [a, b])):
                dirs = []
                for i in range(args.clients):
                    d = work / f"client-{label}-{i}"
                    r = tvc.Registry.init(d)
                    r.commit(f"{label}-m{i}", [files[i]], "bench", detect_code=False)
                    r.close()
                    dirs.append(d)
                results[label] = run_phase(
                    label, args.clients, urls, secret, dirs, files, work / "a", work
                )
            dvc = dvc_push(endpoint, files, work, {**os.environ, "DVC_NO_ANALYTICS": "1"})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    total = args.clients * args.mb
    print(f"\n{args.clients} clients, {args.clients} models × {args.mb:g} MB = {total:g} MB")
    print(f"raw boto3 ({args.clients} threads), same bytes, same bucket: "
          f"upload {up:.1f} MB/s, download {down:.1f} MB/s  (the ceiling)")  # fmt: skip
    print(f"DVC push (dvc-s3) of the same files to the same bucket: {dvc}")
    print(f"\n{'replicas':<9} {'push MB/s':>10} {'pull MB/s':>10} {'errors':>7}")
    for label, (rates, _lat, errors) in results.items():
        print(f"{label:<9} {rates['push']:>10.1f} {rates['pull']:>10.1f} {len(errors):>7}")
    print("\nmetadata latency under that load, ms (p50 / p99, n)")
    names = ["http show", "http refs", "log", "show", "search", "alias set"]
    print(f"{'call':<10}" + "".join(f"{label + ' replica(s)':>26}" for label in results))
    for n in names:
        row = f"{n:<10}"
        for _rates, lat, _e in results.values():
            xs = lat.samples.get(n, [])
            row += f"{pct(xs, 0.5):>11.1f} / {pct(xs, 0.99):>7.1f} ({len(xs):>3})"
        print(row)
    for label, (_r, lat, errors) in results.items():
        for e in errors + lat.errors:
            print(f"ERROR [{label}] {e}")
    print(
        "\nevery pulled file was compared with its source: "
        + ("all identical" if not any(e for _r, _l, e in results.values()) else "SEE ERRORS")
    )
    print(f"(median of one run each; machine load at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
