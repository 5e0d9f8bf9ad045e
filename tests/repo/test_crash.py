"""Crash safety: SIGKILL a committing process at random points, then check what survived.

The guarantee under test: every version that ``commit`` acknowledged is readable bit-for-bit
after the crash, ``fsck --read-data`` finds no error (unindexed packs left by the killed
commit are only warnings, and ``gc`` removes them), and the registry accepts new commits.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import tvc

from repo_helpers import make_model_dir

KILLS = 20
DIRS = 5

CHILD = textwrap.dedent(
    """
    import sys, tvc
    reg = tvc.Registry(sys.argv[1])
    dirs = sys.argv[2:]
    print("READY", flush=True)
    i = 0
    while True:
        d = dirs[i % len(dirs)]
        r = reg.commit("crashy", [d], f"commit {i}", params={"i": i})
        print(f"ACK {r.version.id} {i % len(dirs)}", flush=True)
        i += 1
    """
)


def verify(reg, vid, files):
    version = reg.version(vid)
    for name, data in files.items():
        assert reg.read(version, name) == data, f"{version.ref}:{name}"


@pytest.mark.slow
def test_sigkill_during_commits_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(1234)
    dirs = []
    for k in range(DIRS):
        d = tmp_path / f"in{k}"
        # one shared base; each directory fine-tunes different layers -> dedup + delta paths
        make_model_dir(d, seed=7, n_layers=6, width=512, changed=(k, (k + 2) % 6))
        dirs.append(d)
    originals = {
        k: {p.name: p.read_bytes() for p in sorted(d.iterdir())} for k, d in enumerate(dirs)
    }
    reg_dir = tmp_path / "reg"
    tvc.Registry.init(reg_dir).close()
    acknowledged: dict[str, int] = {}
    env = {**os.environ, "TVC_LOCK_TIMEOUT": "30"}
    for _round in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(reg_dir), *map(str, dirs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        # Kill only once the child is past its imports, so the kills land inside commits.
        assert child.stdout.readline().strip() == b"READY", child.stderr.read().decode()
        time.sleep(rng.uniform(0.05, 1.5))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err.decode()
        fresh = {}
        for line in out.decode().splitlines():
            _ack, vid, k = line.split()
            fresh[vid] = int(k)
        acknowledged.update(fresh)

        with tvc.Registry(reg_dir) as reg:
            report = reg.fsck(read_data=True)
            assert report["ok"], report["errors"]
            # every version acknowledged in this round, and one older one, bit for bit
            older = [v for v in acknowledged if v not in fresh]
            sample = [*fresh, *rng.sample(older, min(1, len(older)))]
            for vid in sample:
                verify(reg, vid, originals[acknowledged[vid]])
    assert acknowledged, "the child should get some commits through"
    with tvc.Registry(reg_dir) as reg:
        for vid, k in acknowledged.items():
            verify(reg, vid, originals[k])
        reg.gc()
        assert reg.fsck(read_data=True) == {**reg.fsck(read_data=True), "ok": True, "warnings": []}
        reg.commit("crashy", [dirs[0]], "after the storm")
