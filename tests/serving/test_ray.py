"""``tvc serve --ray``: a local Ray cluster started here (a head and one worker node, all on
loopback), two replicas, requests through alias moves with none failing; cleaned up by PID.

Ray rewrites 127.0.0.1 to the host's outward address; a head started with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``--node-ip-address=127.0.0.1`` stays on loopback,
and a second node on the same host needs the two address helpers patched (a few lines run as
``python -c``), as found in /work/shared/notes/serving-stacks.md. ``ray start --block`` keeps
each node's processes as its children, so stopping that one process (by PID) stops the node;
``ray stop`` would kill every Ray process on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from server_helpers import _die_with_parent, free_port
from serving_helpers import infer_body, running_serve, sklearn_dir, training_data, wait_for

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow

X = training_data()[0][:2]
WORKER = (
    "import sys, ray._private.services as s;"
    "s.resolve_ip_for_localhost = lambda a: a;"
    "s.get_node_ip_address = lambda *a, **k: '127.0.0.1';"
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)


@contextmanager
def node(args: list[str], env: dict, log: Path, worker: bool = False):
    cmd = (
        [sys.executable, "-c", WORKER] if worker else [sys.executable, "-m", "ray.scripts.scripts"]
    )
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [*cmd, "start", "--block", "--disable-usage-stats", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def cluster(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="tvcray-", dir="/tmp"))  # short: socket paths
    port = free_port()
    address = f"127.0.0.1:{port}"
    with ExitStack() as stack:
        head = stack.enter_context(
            node(
                [
                    "--head",
                    "--node-ip-address=127.0.0.1",
                    f"--port={port}",
                    "--num-cpus=2",
                    "--include-dashboard=false",
                    "--object-store-memory=100000000",
                    f"--temp-dir={temp}",
                ],
                {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                tmp_path / "ray-head.log",
            )
        )

        def nodes() -> int:
            if head.poll() is not None:
                raise RuntimeError((tmp_path / "ray-head.log").read_text())
            r = subprocess.run(
                [sys.executable, "-m", "ray.scripts.scripts", "status", f"--address={address}"],
                capture_output=True,
                text=True,
                env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
            )
            return r.stdout.count(" node_")

        wait_for(lambda: nodes() >= 1, timeout=180, step=1)
        stack.enter_context(
            node(
                [
                    f"--address={address}",
                    "--node-ip-address=127.0.0.1",
                    "--num-cpus=1",
                    "--object-store-memory=80000000",
                ],
                {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"},
                tmp_path / "ray-worker.log",
                worker=True,
            )
        )
        wait_for(lambda: nodes() >= 2, timeout=180, step=1)
        yield address
    subprocess.run(["rm", "-rf", str(temp)], check=False)


def test_ray_serve_two_replicas_follow_the_alias(reg, commit, cache, cluster):
    for c in (1.0, 0.01):
        commit("clf", sklearn_dir, c)
    reg.alias("clf", "production", "v1")
    env = {"RAY_ADDRESS": cluster, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    args = ["clf@production", "--ray", "--replicas", "2", "--poll", "0.2"]
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()
    with running_serve(args, reg.root, cache, env) as (url, _proc):

        def client() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/v2/models/clf/infer", json=infer_body(X))
                        answers.append((r.status_code, r.headers.get("x-tvc-version")))
                    except httpx.HTTPError as exc:
                        answers.append((-1, repr(exc)))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for target in ("v2", "v1", "v2"):
                reg.alias("clf", "production", target)
                mark = len(answers)
                # every replica has moved once 20 answers in a row come from the target
                wait_for(
                    lambda t=target, m=mark: (
                        len(answers) > m + 20 and all(v == f"clf@{t}" for _c, v in answers[-20:])
                    ),
                    timeout=120,
                )
        finally:
            stop.set()
            for t in threads:
                t.join()
    failed = [a for a in answers if a[0] != 200]
    assert failed == [], failed[:5]
    assert {v for _c, v in answers} == {"clf@v1", "clf@v2"}
