"""SIGKILL of the client and of the server at random points of a push and a pull over HTTP;
then the same command again finishes, sends only what is still missing, and both sides pass
``fsck --read-data`` with every version bit-exact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tvc
from server_helpers import running_server, token
from tvc.remote import open_transport, sync

from repo_helpers import make_model_dir

CLIENT = textwrap.dedent(
    """
    import sys
    from tvc.remote import objects, open_transport, sync
    import tvc
    objects.PACK_LIMIT = 64 * 1024   # many small packs: many points to die at
    direction, where, url, tok = sys.argv[1:5]
    reg = tvc.Registry(where)
    with open_transport(url, tok) as remote:
        if direction == "push":
            sync.push(reg, remote, ["m"])
        else:
            sync.pull(reg, remote, ["m"])
    """
)


def run_client(direction: str, where: Path, url: str, tok: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, direction, str(where), url, tok],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TVC_DAEMON": "0"},
    )


def packs_in(reg_dir: Path) -> int:
    return sum(1 for _ in (reg_dir / ".tvc" / "objects" / "packs").glob("*/*.pack"))


def kill_after(victim: subprocess.Popen, watched: Path, more: int, other=None) -> bool:
    """SIGKILL ``victim`` once ``watched`` holds ``more`` packs more than now (a point in the
    middle of a transfer, found by watching, not by timing); False if the transfer ended
    first. Bounded: at most 3,000 looks."""
    target = packs_in(watched) + more
    for _ in range(3000):
        if packs_in(watched) >= target:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            return True
        for proc in (victim, other):
            if proc is not None and proc.poll() is not None:
                return False
        try:
            victim.wait(0.02)
        except subprocess.TimeoutExpired:
            pass
    return False


def same_versions(a, b) -> None:
    va, vb = a.log("m"), b.log("m")
    assert [v.id for v in va] == [v.id for v in vb]
    for v in va:
        for fe in a.version(v.id).files:
            assert a.read(v, fe.path) == b.read(b.version(v.id), fe.path)


@pytest.mark.slow
def test_sigkill_client_and_server_during_push_and_pull(tmp_path):
    rng = random.Random(1313)
    a = tvc.Registry.init(tmp_path / "a")
    for i in range(4):
        make_model_dir(tmp_path / "out", seed=7, n_layers=48, width=256, changed=tuple(range(i)))
        a.commit("m", [tmp_path / "out"], f"step {i}", detect_code=False)
    tvc.Registry.init(tmp_path / "srv").close()
    secret = token(tmp_path / "srv", "pusher")
    kills = 0
    # The client dies at random points of its push.
    with running_server(tmp_path / "srv") as (url, _server):
        for _ in range(3):
            client = run_client("push", tmp_path / "a", url, secret)
            kills += kill_after(client, tmp_path / "srv", rng.randint(3, 15))
            client.wait()
    # The server dies at random points of the next pushes (a new server each time).
    for _ in range(2):
        with running_server(tmp_path / "srv") as (url, server):
            client = run_client("push", tmp_path / "a", url, secret)
            kills += kill_after(server, tmp_path / "srv", rng.randint(3, 15), client)
            client.wait()
    with running_server(tmp_path / "srv") as (url, _server):
        with open_transport(url, secret) as remote:
            t = sync.push(a, remote, ["m"])
            assert t.branches[0]["status"] in ("updated", "up to date")
        srv = tvc.Registry(tmp_path / "srv")
        same_versions(a, srv)
        # Now a pull into a fresh registry, killed twice, then run to the end.
        b = tvc.Registry.init(tmp_path / "b")
        for _ in range(2):
            client = run_client("pull", tmp_path / "b", url, secret)
            kills += kill_after(client, tmp_path / "b", rng.randint(3, 15))
            client.wait()
        with open_transport(url, secret) as remote:
            sync.pull(b, remote, ["m"])
        same_versions(a, b)
    assert kills >= 5, kills  # the points were inside transfers
    for reg in (a, srv, b):
        report = reg.fsck(read_data=True)
        assert report["ok"], report["errors"]
