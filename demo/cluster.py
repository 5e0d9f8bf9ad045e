"""Scale-out, end to end on loopback (``make demo-cluster``): SeaweedFS as the S3 store,
PostgreSQL as the metadata DB, two ``tvc server`` replicas sharing both; the demo model is
pushed through one replica and cloned through the other, then everything is stopped.

Every step is a real ``tvc`` command; the services come from wheels (see
``demo/cluster_services.py``) and live in a temp directory that is removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster_services import postgresql, s3_env, seaweedfs, tvc_server  # noqa: E402
from demo import accuracy, init_params, save, train  # noqa: E402

TVC = [sys.executable, "-m", "tvc"]


def sh(cwd: Path, *args: str, env: dict[str, str], show: bool = True) -> str:
    if show:
        print(f"\n[{cwd.name}]$ tvc {shlex.join(args)}", flush=True)
    res = subprocess.run([*TVC, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if show and res.stdout.strip():
        print(res.stdout.rstrip())
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        raise SystemExit(f"tvc {args[0]} failed ({res.returncode})")
    return res.stdout


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def main() -> None:
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tvc-demo-cluster-"))
    os.chmod(work, 0o755)  # PostgreSQL runs as nobody when we are root: it must get in
    try:
        with contextlib.ExitStack() as stack:
            heading("Services on 127.0.0.1: PostgreSQL and SeaweedFS (S3)")
            pg = stack.enter_context(postgresql(work / "pg"))
            endpoint = stack.enter_context(seaweedfs(work / "weed", "tvc-demo"))
            eng = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
            with eng.connect() as conn:
                conn.execute(sa.text('CREATE DATABASE "registry"'))
            eng.dispose()
            db = pg.rsplit("/", 1)[0] + "/registry"
            store = f"s3://tvc-demo/registry?endpoint={endpoint}"
            print(f"metadata: {db}\nstore:    {store}")
            env = {**os.environ, **s3_env(work), "TVC_AUTHOR": "demo", "TVC_DAEMON": "0"}
            env["XDG_CONFIG_HOME"] = str(work / "config")
            os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})

            heading("One registry in PostgreSQL + S3, served by two replicas")
            for d in ("replica-a", "laptop", "elsewhere"):
                (work / d).mkdir()
            sh(work / "replica-a", "init", "--store", store, "--db", db, env=env)
            secret = sh(
                work / "replica-a", "token", "create", "demo", "--scope", "admin", env=env
            ).strip()
            a = stack.enter_context(tvc_server(work / "replica-a", env=env))
            b = stack.enter_context(
                tvc_server(work / "replica-b", "--store", store, "--db", db, env=env)
            )
            print(f"replica A: {a}  (config dir replica-a/.tvc)")
            print(f"replica B: {b}  (config dir replica-b/.tvc: {_ls(work / 'replica-b/.tvc')})")

            heading("Train the demo model on a laptop; commit two versions")
            digits = load_digits()
            x = (digits.data / 16.0).astype(np.float32)
            xtr, xte, ytr, yte = train_test_split(x, digits.target, test_size=0.25, random_state=0)
            rng = np.random.default_rng(0)
            sizes = [64, 512, 512, 256, 10]
            params = train(init_params(rng, sizes), xtr, ytr, epochs=4, lr=0.05,
                           trainable=range(4), rng=rng)  # fmt: skip
            laptop = work / "laptop"
            save(params, laptop / "out", sizes, "baseline")
            sh(laptop, "init", "-q", env=env)
            acc = accuracy(params, xte, yte)
            sh(laptop, "commit", "digits-mlp", "out", "-m", "baseline",
               "--metric", f"accuracy={acc:.4f}", "-q", env=env)  # fmt: skip
            params = train(params, xtr, ytr, epochs=2, lr=0.02, trainable={3}, rng=rng)
            save(params, laptop / "out", sizes, "fine-tuned head")
            acc = accuracy(params, xte, yte)
            sh(laptop, "commit", "digits-mlp", "out", "-m", "fine-tuned head",
               "--metric", f"accuracy={acc:.4f}", "-q", env=env)  # fmt: skip

            heading("Push through replica A")
            sh(laptop, "login", a, "--token", secret, env=env)
            sh(laptop, "remote", "add", "origin", a, env=env)
            sh(laptop, "push", "origin", "digits-mlp", "--quiet", env=env)

            heading("Clone through replica B (another host, another process)")
            sh(work / "elsewhere", "login", b, "--token", secret, env=env)
            sh(work / "elsewhere", "clone", b, "clone", "--quiet", env=env)
            clone = work / "elsewhere" / "clone"
            sh(clone, "log", "digits-mlp", env=env)
            sh(clone, "checkout", "digits-mlp@v2", "restored", "-q", env=env)
            same = (clone / "restored" / "model.safetensors").read_bytes() == (
                laptop / "out" / "model.safetensors"
            ).read_bytes()
            print(f"\nv2 cloned through B is bit-exact with what was pushed through A: {same}")
            if not same:
                raise SystemExit("the clone differs")

            heading("Where the state lives")
            sh(work / "replica-b", "fsck", "--read-data", env=env)
            sh(work / "replica-b", "stats", env=env)
            print(f"replica-b/.tvc holds only: {_ls(work / 'replica-b/.tvc')}")

            heading("Stop everything")
        print(
            f"\ndone in {time.perf_counter() - t0:.1f} s: replicas, SeaweedFS, PostgreSQL stopped"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ls(d: Path) -> str:
    return ", ".join(sorted(p.name for p in d.iterdir()))


if __name__ == "__main__":
    main()
