"""The resident helper (tvc.cli.daemon) behind the console script (tvc.cli.launcher).

Every test starts `tvc` as a real process, as a user's shell does, with the helper on and its
sockets in a fresh directory, and stops every helper it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tvc.cli import launcher

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the helper is Linux-only"
)


class Shell:
    """Runs `tvc` in a registry directory with the helper on."""

    def __init__(self, root: Path, rundir: str) -> None:
        self.root = root
        self.rundir = rundir
        self.env = {**os.environ, "TVC_DAEMON": "1", "TVC_DAEMON_DIR": rundir}
        self.env.pop("TVC_DIR", None)

    def cmd(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "tvc", *argv]

    def run(self, *argv: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cmd(*argv),
            cwd=cwd or self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def helpers(self) -> list[dict]:
        return launcher.live_helpers(self.rundir)

    def wait_for_helper(self) -> dict:
        assert launcher.wait_until(lambda: any(h.get("pid") for h in self.helpers()), 30)
        assert launcher.wait_until(lambda: Path(self.helpers()[0]["socket"]).exists(), 30)
        return self.helpers()[0]

    def _children(self, helper_pid: int) -> dict[int, str]:
        """The helper's child processes and their working directories."""
        ps = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(helper_pid)], capture_output=True, text=True
        )
        found = {}
        for pid in map(int, ps.stdout.split()):
            with contextlib.suppress(OSError):
                found[pid] = os.readlink(f"/proc/{pid}/cwd")
        return found

    def children(self, helper_pid: int) -> list[int]:
        """Children running a command here (every test's command runs in the work tree)."""
        root = str(self.root)
        return [
            pid
            for pid, cwd in self._children(helper_pid).items()
            if cwd == root or cwd.startswith(root + os.sep)
        ]

    @staticmethod
    def warm_registry(helper: dict) -> Path:
        """The registry a helper's spares warm up on."""
        return Path(helper["socket"][: -len(".sock")] + ".warm")

    def spares(self, helper_pid: int) -> list[int]:
        """Spare children waiting for a command, or just forked (their working directory is /;
        while warming up it is the socket directory)."""
        return [pid for pid, cwd in self._children(helper_pid).items() if cwd == "/"]


@pytest.fixture
def sh(tmp_path, monkeypatch):
    # A short directory: a Unix socket path has at most 107 bytes.
    rundir = tempfile.mkdtemp(prefix="tvcd-")
    monkeypatch.setenv("TVC_DAEMON_DIR", rundir)
    root = tmp_path / "work"
    root.mkdir()
    shell = Shell(root, rundir)
    assert shell.run("init", "-q", TVC_DAEMON="0").returncode == 0
    yield shell
    launcher.stop_helpers(rundir, timeout=30)
    assert not shell.helpers()
    shutil.rmtree(rundir, ignore_errors=True)


def _model(root: Path, name: str = "model.bin", data: bytes = b"weights v1") -> Path:
    p = root / name
    p.write_bytes(data)
    return p


def test_first_command_starts_the_helper_and_later_ones_use_it(sh):
    _model(sh.root)
    first = sh.run("commit", "m", "model.bin", "-m", "one")
    assert first.returncode == 0, first.stderr
    helper = sh.wait_for_helper()
    report = sh.root / "report.jsonl"
    second = sh.run("log", "m", TVC_DAEMON_REPORT=str(report))
    assert second.returncode == 0 and "one" in second.stdout
    (line,) = report.read_text().splitlines()
    usage = json.loads(line)  # the command ran in a child of the helper, which reported it
    assert usage["exit"] == 0 and usage["signal"] == 0 and usage["maxrss"] > 0
    assert sh.helpers()[0]["pid"] == helper["pid"]


def test_a_command_goes_to_the_warmed_spare_and_another_spare_follows(sh):
    _model(sh.root)
    sh.run("commit", "m", "model.bin", "-m", "one", TVC_DAEMON="0")
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    warm = sh.warm_registry(helper)
    assert launcher.wait_until(lambda: (warm / ".tvc").is_dir(), 30)
    assert launcher.wait_until(lambda: len(sh.spares(helper["pid"])) == 1, 30)
    (spare,) = sh.spares(helper["pid"])

    r = sh.run("log", "m", TVC_DAEMON_REPORT=str(sh.root / "r"))
    assert r.returncode == 0 and "one" in r.stdout
    assert json.loads((sh.root / "r").read_text())["spare"] is True
    assert not Path(f"/proc/{spare}").exists() or spare not in sh.spares(helper["pid"])
    assert launcher.wait_until(lambda: sh.spares(helper["pid"]) not in ([], [spare]), 30)

    sh.run("daemon", "stop")
    assert not warm.exists()


def test_spares_that_die_are_replaced_a_few_times_then_commands_fork(sh):
    _model(sh.root)
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    seen: set[int] = set()

    def new_spare() -> set[int]:
        return set(sh.spares(helper["pid"])) - seen

    while len(seen) < 3:  # the helper's limit
        assert launcher.wait_until(new_spare, 30)
        spare = min(new_spare() or {0})
        if spare:  # else it has gone on to warm up since: found again once it waits
            seen.add(spare)
            os.kill(spare, signal.SIGKILL)
    assert launcher.wait_until(lambda: not sh.spares(helper["pid"]), 30)
    time.sleep(0.5)
    assert not sh.spares(helper["pid"])  # no fourth one
    r = sh.run("commit", "m", "model.bin", "-m", "one", TVC_DAEMON_REPORT=str(sh.root / "r"))
    assert r.returncode == 0, r.stderr  # in a fresh fork
    assert json.loads((sh.root / "r").read_text())["exit"] == 0


def test_a_spare_stuck_in_its_warm_up_is_passed_over(sh):
    """A command never waits for a spare that has not said it is ready."""
    _model(sh.root)
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    warm = sh.warm_registry(helper)
    assert launcher.wait_until(lambda: (warm / ".tvc").is_dir() and sh.spares(helper["pid"]), 30)
    (first,) = sh.spares(helper["pid"])
    (pack,) = (warm / ".tvc" / "objects").rglob("*.pack")
    pack.unlink()
    os.mkfifo(pack)  # the next spare's warm-up (its `cat`) blocks opening it, for good
    os.kill(first, signal.SIGKILL)

    def stuck() -> list[int]:
        return [p for p, cwd in sh._children(helper["pid"]).items() if cwd == str(warm)]

    assert launcher.wait_until(stuck, 30)
    r = sh.run("commit", "m", "model.bin", "-m", "one")
    assert r.returncode == 0, r.stderr  # in a fresh fork
    assert sh.run("log", "m").returncode == 0
    assert stuck()  # still there, never handed a command


def test_output_and_exit_codes_match_a_cold_process(sh):
    _model(sh.root)
    sh.run("daemon", "start")
    sh.wait_for_helper()
    cases = [
        ("commit", "m", "model.bin", "-m", "one", "--json"),
        ("log", "m"),
        ("show", "m@v1", "--json"),
        ("show", "m@v9"),  # unknown ref
        ("commit", "m", "../outside", "-m", "x"),  # path outside the working tree
        ("no-such-command",),  # usage error (Typer's exit 2)
        ("--version",),
    ]
    for argv in cases:
        warm = sh.run(*argv, TVC_DAEMON_REPORT=str(sh.root / "r"))
        if argv[0] == "commit" and argv[-1] == "--json":
            sh.run("tag", "m@v1", "first")  # the cold run below must not find v1 new again
            cold = warm
        else:
            cold = sh.run(*argv, TVC_DAEMON="0")
        assert (warm.returncode, warm.stdout, warm.stderr) == (
            cold.returncode,
            cold.stdout,
            cold.stderr,
        ), argv
    reports = [json.loads(x) for x in (sh.root / "r").read_text().splitlines()]
    assert len(reports) == len(cases) and {r["exit"] for r in reports} >= {0, 2, 4}


def test_the_child_takes_the_clients_directory_environment_and_umask(sh):
    sub = sh.root / "deep" / "er"
    sub.mkdir(parents=True)
    _model(sub, "w.bin")
    sh.run("daemon", "start")
    r = sh.run("commit", "m", "w.bin", "-m", "from a subdirectory", cwd=sub, TVC_AUTHOR="ada")
    assert r.returncode == 0, r.stderr
    shown = json.loads(sh.run("show", "m", "--json").stdout)
    assert shown["author"] == "ada"
    assert [f["path"] for f in shown["files"]] == ["w.bin"]  # found from the subdirectory
    other = sh.root.parent / "elsewhere"
    r = sh.run("log", "m", cwd=sh.root.parent, TVC_DIR=str(sh.root / ".tvc"))
    assert r.returncode == 0 and "from a subdirectory" in r.stdout, r.stderr
    out = sh.root / "co"
    r = subprocess.run(
        ["sh", "-c", f"umask 077 && exec {' '.join(sh.cmd('checkout', 'm', str(out)))}"],
        cwd=sh.root,
        env=sh.env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "w.bin").stat().st_mode & 0o077 == 0
    assert not other.exists()


@contextlib.contextmanager
def _commit_in_flight(sh: Shell):
    """A `tvc commit` through the helper, held waiting for the metadata DB's write lock, which
    the test holds (an open ``BEGIN IMMEDIATE``).

    Yields the client process, the helper's pid and the command's child pid.
    """
    _model(sh.root)
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    db = sqlite3.connect(sh.root / ".tvc" / "tvc.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        p = subprocess.Popen(sh.cmd("commit", "m", "model.bin", "-m", "x"), cwd=sh.root, env=sh.env)
        assert launcher.wait_until(lambda: sh.children(helper["pid"]), 30)
        yield p, helper["pid"], sh.children(helper["pid"])[0]
    finally:
        db.execute("ROLLBACK")
        db.close()


def test_ctrl_c_reaches_the_command(sh):
    with _commit_in_flight(sh) as (p, helper, _child):
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 130  # as a cold process interrupted there exits
    assert launcher.wait_until(lambda: not sh.children(helper), 30)
    assert sh.run("log", "m").returncode == 4  # nothing was committed


def test_a_killed_client_takes_its_command_down(sh):
    with _commit_in_flight(sh) as (p, helper, _child):
        p.kill()
        p.wait(30)
        assert launcher.wait_until(lambda: not sh.children(helper), 30)
    assert sh.run("log", "m").returncode == 4


def test_a_client_dies_the_way_its_command_died(sh):
    with _commit_in_flight(sh) as (p, _helper, child):
        os.kill(child, signal.SIGKILL)
        assert p.wait(30) == -signal.SIGKILL


def test_a_new_spare_warms_up_while_a_command_runs(sh):
    """Commands issued back to back each find a ready spare: the next one does not wait for the
    running command to end."""
    with _commit_in_flight(sh) as (p, helper, child):
        assert launcher.wait_until(lambda: set(sh.spares(helper)) - {child}, 30)
        r = sh.run("log", "--help", TVC_DAEMON_REPORT=str(sh.root / "r"))
        assert r.returncode == 0, r.stderr
        assert json.loads((sh.root / "r").read_text())["spare"] is True
        assert p.poll() is None  # the commit still waits for the lock
    assert p.wait(30) == 0


def test_concurrent_commands(sh):
    for i in range(4):
        _model(sh.root, f"w{i}.bin", bytes([i]) * 1000)
    sh.run("daemon", "start")
    procs = [
        subprocess.Popen(
            sh.cmd("commit", f"m{i}", f"w{i}.bin", "-m", f"c{i}", "--json"),
            cwd=sh.root,
            env=sh.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert sorted(json.loads(o)["model"] for o in outs) == ["m0", "m1", "m2", "m3"]


def test_hostile_or_broken_clients_do_not_stop_the_helper(sh):
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    path = helper["socket"]
    for junk in (b"", b"\x00" * 3, b"garbage that is not a header", b"\xff" * 8):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.sendall(junk)
    with socket.socket(socket.AF_UNIX) as s:  # a header with fds but a lying length
        s.connect(path)
        socket.send_fds(s, [launcher._HEADER.pack(launcher.PROTOCOL, 1 << 30)], [0, 1, 2])
    with socket.socket(socket.AF_UNIX) as s:  # another protocol
        s.connect(path)
        socket.send_fds(s, [launcher._HEADER.pack(99, 2)], [0, 1, 2])
        try:  # the helper may hang up before this arrives
            s.sendall(b"{}")
            assert s.recv(100) == b""  # refused: nothing ran
        except (BrokenPipeError, ConnectionResetError):
            pass
    r = sh.run("log", "--help", TVC_DAEMON_REPORT=str(sh.root / "r"))
    assert r.returncode == 0 and (sh.root / "r").exists()
    assert sh.helpers()[0]["pid"] == helper["pid"]


def test_a_stale_helper_refuses_and_exits(sh, tmp_path):
    """Code on disk changed since the helper imported it: it runs nothing more and leaves."""
    extra = tmp_path / "extra"
    extra.mkdir()
    sh.env["PYTHONPATH"] = str(extra)
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    (extra / "newpkg-1.0.dist-info").mkdir()  # an install into an import directory
    assert launcher.run_in_helper(helper["socket"], ["--version"]) is None
    assert launcher.wait_until(lambda: not sh.helpers(), 30)
    r = sh.run("--version")  # runs cold, and starts a fresh helper
    assert r.returncode == 0
    assert sh.wait_for_helper()["pid"] != helper["pid"]


def test_idle_helper_exits_and_cleans_up(sh):
    sh.env["TVC_DAEMON_IDLE"] = "0.5"
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    assert launcher.wait_until(lambda: not sh.helpers(), 30)
    assert not Path(helper["socket"]).exists()
    assert not Path(helper["socket"]).with_suffix(".json").exists()


def test_one_helper_per_key(sh):
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    base = helper["socket"][: -len(".sock")]
    second = subprocess.run(
        [sys.executable, "-P", "-m", "tvc.cli.daemon", base], env=sh.env, timeout=60
    )
    assert second.returncode == 0
    assert [h["pid"] for h in sh.helpers()] == [helper["pid"]]


def test_unsafe_directory_means_no_helper(sh, tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    r = sh.run("log", "--help", TVC_DAEMON_DIR=str(open_dir))
    assert r.returncode == 0
    assert list(open_dir.iterdir()) == []  # ran cold, started nothing
    r = sh.run("daemon", "status", TVC_DAEMON_DIR=str(open_dir))
    assert r.returncode == 2 and "mode 700" in r.stderr


def test_off_switch(sh):
    r = sh.run("log", "--help", TVC_DAEMON="0")
    assert r.returncode == 0
    time.sleep(0.3)
    assert not sh.helpers()
    status = json.loads(sh.run("daemon", "status", "--json", TVC_DAEMON="0").stdout)
    assert status["enabled"] is False and status["helpers"] == []


def test_status_and_stop(sh):
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    status = json.loads(sh.run("daemon", "status", "--json").stdout)
    (listed,) = status["helpers"]
    assert listed["pid"] == helper["pid"] and listed["current"] is True
    r = sh.run("daemon", "stop")
    assert r.returncode == 0 and "stopped 1" in r.stdout
    assert not sh.helpers()
    assert "none running" in sh.run("daemon", "status", TVC_DAEMON="0").stdout


def test_a_helper_that_cannot_start_is_not_started_again(sh, tmp_path):
    """A broken import in the helper: commands run cold, and no helper is spawned per command."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "gguf.py").write_text("raise RuntimeError('this gguf is broken')\n")
    sh.env["PYTHONPATH"] = str(broken)
    assert sh.run("--version").returncode == 0  # cold; starts a helper, which fails
    assert launcher.wait_until(lambda: any(Path(sh.rundir).glob("*.failed")), 30)
    (marker,) = Path(sh.rundir).glob("*.failed")
    assert "this gguf is broken" in marker.read_text()
    stamp = marker.stat().st_mtime_ns
    assert sh.run("--version").returncode == 0
    time.sleep(1.0)
    assert marker.stat().st_mtime_ns == stamp  # no second attempt
    status = json.loads(sh.run("daemon", "status", "--json").stdout)
    (entry,) = status["helpers"]
    assert "this gguf is broken" in entry["failed"] and entry["current"] is True
    assert "failed to start" in sh.run("daemon", "status").stdout
    sh.run("daemon", "stop")
    assert not list(Path(sh.rundir).glob("*.failed"))
