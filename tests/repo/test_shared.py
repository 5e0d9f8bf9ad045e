"""A registry shared between users: group-readable files that honour the umask, and read
commands that work without write permission (here: through a read-only bind mount, since the
test runs as root, which file permissions do not stop)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

import tvc


def _modes(root) -> dict[str, int]:
    out = {}
    for p in [root / ".tvc" / "config.toml", *(root / ".tvc" / "objects").rglob("*.pack")]:
        out[p.name] = stat.S_IMODE(p.stat().st_mode)
    return out


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        reg = tvc.Registry.init(tmp_path / "reg")
        (tmp_path / "a.txt").write_text("hello")
        reg.commit("m", [tmp_path / "a.txt"], "one")
        reg.close()
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "reg")
    assert modes and set(modes.values()) == {0o666 & ~mask}


@pytest.fixture
def read_only_view(tmp_path):
    reg = tvc.Registry.init(tmp_path / "reg")
    (tmp_path / "a.txt").write_text("hello")
    reg.commit("m", [tmp_path / "a.txt"], "one")
    reg.close()
    view = tmp_path / "view"
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(tmp_path / "reg"), str(view)])
    if mounted.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(view)])
        if ro.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield view
    finally:
        subprocess.run(["umount", str(view)])


def _tvc(root, *args):
    env = {**os.environ, "TVC_DAEMON": "0"}
    return subprocess.run(
        [sys.executable, "-m", "tvc", "-R", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
    )


def test_read_commands_work_on_a_read_only_registry(read_only_view, tmp_path):
    assert _tvc(read_only_view, "log", "m").returncode == 0
    r = _tvc(read_only_view, "cat", "m", "a.txt")
    assert r.returncode == 0 and r.stdout == "hello"
    r = _tvc(read_only_view, "checkout", "m@v1", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "a.txt").read_text() == "hello"
    r = _tvc(read_only_view, "fsck", "--read-data")
    assert r.returncode == 0, r.stderr
    r = _tvc(read_only_view, "alias", "set", "m", "production", "v1")
    assert r.returncode == 10 and "read" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
