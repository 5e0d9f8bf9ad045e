"""The resident helper (tvc.cli.daemon) behind the console script (tvc.cli.launcher).

Every test starts `tvc` as a real process, as a user's shell does, with the helper on and its
sockets in a fresh directory, and stops every helper it started. No test concludes from
nothing having happened after a sleep: where a test says "no helper", "no spare" or "no second
attempt", it first waits for an event after which that thing would certainly be visible.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
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

    def helper_processes(self, rundir: str | None = None) -> list[int]:
        """Every process running a helper for this test's directory, starting or not: a
        helper the launcher spawned exists from before the launching command exits (Popen
        returns after the exec) until it fails or is stopped."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            where = (rundir or self.rundir).encode()
            if b"tvc.cli.daemon" in argv and any(a.startswith(where) for a in argv):
                found.append(int(entry))
        return found

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
    # Two commands: the helper's loop makes a missing spare at the top of every turn, so by
    # the second command's report a fourth spare would have been forked.
    report = sh.root / "r"
    r = sh.run("commit", "m", "model.bin", "-m", "one", TVC_DAEMON_REPORT=str(report))
    assert r.returncode == 0, r.stderr  # in a fresh fork
    assert sh.run("log", "m", TVC_DAEMON_REPORT=str(report)).returncode == 0
    reports = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(x["exit"], x["spare"]) for x in reports] == [(0, False), (0, False)]
    assert not sh._children(helper["pid"])  # no fourth spare, warming up or waiting


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
    assert list(open_dir.iterdir()) == []  # ran cold, started nothing:
    assert not sh.helper_processes(str(open_dir))  # (a helper's files come after its imports)
    r = sh.run("daemon", "status", TVC_DAEMON_DIR=str(open_dir))
    assert r.returncode == 2 and "mode 700" in r.stderr


def test_off_switch(sh):
    r = sh.run("log", "--help", TVC_DAEMON="0")
    assert r.returncode == 0
    assert not sh.helper_processes() and not sh.helpers()  # none was spawned
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
    assert launcher.wait_until(lambda: not sh.helper_processes(), 30)  # the first one is gone
    assert sh.run("--version").returncode == 0
    # A second attempt would be a process now (Popen returns after its exec), or, had it
    # already failed, it would have rewritten the marker.
    assert not sh.helper_processes()
    assert marker.stat().st_mtime_ns == stamp
    status = json.loads(sh.run("daemon", "status", "--json").stdout)
    (entry,) = status["helpers"]
    assert "this gguf is broken" in entry["failed"] and entry["current"] is True
    assert "failed to start" in sh.run("daemon", "status").stdout
    sh.run("daemon", "stop")
    assert not list(Path(sh.rundir).glob("*.failed"))


# -- opt-in ----------------------------------------------------------------------------------
def test_the_helper_is_off_unless_asked_for(sh, tmp_path):
    """A forked child would run in the helper's cgroup and limits: by default every command
    runs in its own process; TVC_DAEMON=1 or the user's config turns the helper on."""
    config_home = tmp_path / "config"
    env = {"XDG_CONFIG_HOME": str(config_home)}
    del sh.env["TVC_DAEMON"]
    assert sh.run("log", "--help", **env).returncode == 0
    assert not sh.helper_processes() and not sh.helpers()
    status = json.loads(sh.run("daemon", "status", "--json", **env).stdout)
    assert status["enabled"] is False and "off by default" in status["why"]
    r = sh.run("daemon", "start", **env)
    assert r.returncode == 2 and "off by default" in r.stderr

    for weird in ("weird", "2", "enabled"):  # not understood: off, and said why
        assert sh.run("log", "--help", TVC_DAEMON=weird, **env).returncode == 0
        assert not sh.helper_processes()
        status = json.loads(sh.run("daemon", "status", "--json", TVC_DAEMON=weird).stdout)
        assert status["enabled"] is False and "neither 1 nor 0" in status["why"]

    (config_home / "tvc").mkdir(parents=True)
    config = config_home / "tvc" / "config.toml"
    config.write_text("[daemon]\nenabled = [")  # broken: off, never a traceback
    r = sh.run("log", "--help", **env)
    assert r.returncode == 0 and not sh.helper_processes()
    assert "not valid TOML" in json.loads(sh.run("daemon", "status", "--json", **env).stdout)["why"]
    config.write_text("[daemon]\nenabled = true\n")
    assert sh.run("log", "--help", **env).returncode == 0  # cold; starts the helper
    assert sh.helper_processes()
    sh.wait_for_helper()
    assert sh.run("log", "--help", TVC_DAEMON_REPORT=str(sh.root / "r"), **env).returncode == 0
    assert json.loads((sh.root / "r").read_text())["exit"] == 0  # ran in the helper
    r = sh.run("log", "--help", TVC_DAEMON="0", TVC_DAEMON_REPORT=str(sh.root / "r0"), **env)
    assert r.returncode == 0 and not (sh.root / "r0").exists()  # the variable beats the file


def test_setting_reads_the_variable_then_the_users_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("TVC_DAEMON")
    assert launcher.setting()[0] is False
    (tmp_path / "tvc").mkdir()
    for text, on in [
        ("[daemon]\nenabled = true\n", True),
        ("[daemon]\nenabled = false\n", False),
        ('[daemon]\nenabled = "yes"\n', False),
        ("daemon = 3\n", False),
        ("\xff", False),
    ]:
        (tmp_path / "tvc" / "config.toml").write_bytes(text.encode("latin-1"))
        assert launcher.setting()[0] is on, text
    for value, on in [("1", True), ("on", True), ("0", False), ("off", False), ("x", False)]:
        monkeypatch.setenv("TVC_DAEMON", value)
        assert launcher.setting()[0] is on, value


# -- parity with a cold process ----------------------------------------------------------------
def _both_ways(sh: Shell, *argv: str, **kw) -> tuple[tuple, tuple]:
    """``argv`` through the helper (checked to have run there) and in a cold process."""
    report = sh.root / "parity-report"
    report.unlink(missing_ok=True)
    env = kw.pop("env", {})
    warm = subprocess.run(
        sh.cmd(*argv), env={**sh.env, **env, "TVC_DAEMON_REPORT": str(report)}, **kw
    )
    assert report.exists(), argv  # it did run in the helper
    cold = subprocess.run(sh.cmd(*argv), env={**sh.env, **env, "TVC_DAEMON": "0"}, **kw)
    return (warm.returncode, warm.stdout, warm.stderr), (cold.returncode, cold.stdout, cold.stderr)


def test_parity_output_and_exit_codes(sh):
    """The same command gives the same bytes and exit code with the helper on and off."""
    _model(sh.root, data=bytes(range(256)) * 400)
    assert sh.run("commit", "m", "model.bin", "-m", "one", TVC_DAEMON="0").returncode == 0
    sh.run("daemon", "start")
    sh.wait_for_helper()
    kw = {"cwd": sh.root, "capture_output": True, "timeout": 60}
    cases = [
        ("log", "m"),  # success
        ("show", "m@v1", "--json"),
        ("ls", "m@v1"),
        ("--version",),
        ("no-such-command",),  # usage errors
        ("show", "Bad Name"),
        ("log", "m", "-n", "abc"),
        ("show", "m@v9"),  # unknown refs
        ("show", "m@v99999999999999999999"),
        ("show", "nope@v1"),
        ("commit", "m", "../outside", "-m", "x"),  # unsafe path
        ("cat", "m@v1", "model.bin"),  # binary to a pipe
        ("cat", "m@v1", "missing.bin"),
    ]
    codes = set()
    for argv in cases:
        warm, cold = _both_ways(sh, *argv, **kw)
        assert warm == cold, argv
        assert b"Traceback" not in warm[2]
        codes.add(warm[0])
    assert {0, 2, 4, 7} <= codes

    # TZ: local times follow the caller's time zone, as in a cold process.
    seen = set()
    for tz in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        warm, cold = _both_ways(sh, "log", "m", env={"TZ": tz}, **kw)
        assert warm == cold, tz
        seen.add(warm[1])
    assert len(seen) == 3  # the output did depend on TZ

    # stdin: a closed one and a pipe; stdout: a pipe whose reader leaves early.
    for stdin in (subprocess.DEVNULL, None):
        warm, cold = _both_ways(
            sh,
            "show",
            "m",
            input=b"" if stdin is None else None,
            **({"stdin": stdin} if stdin is not None else {}),
            **kw,
        )
        assert warm == cold
    head = {"cwd": sh.root, "timeout": 60}
    _model(sh.root, "big.bin", os.urandom(4 << 20))  # far more than a pipe holds
    assert sh.run("commit", "big", "big.bin", "-m", "big", TVC_DAEMON="0").returncode == 0
    for daemon in ("1", "0"):
        r = subprocess.run(
            [
                "bash",
                "-c",
                f"{' '.join(sh.cmd('cat', 'big@v1', 'big.bin'))} | head -c 10; "
                'echo " ${PIPESTATUS[0]}"',
            ],
            env={**sh.env, "TVC_DAEMON": daemon},
            capture_output=True,
            **head,
        )
        assert (r.stdout[10:], r.stderr) == (b" 141\n", b""), daemon  # quiet, as cat is


def test_parity_a_deleted_working_directory(sh):
    """One line and exit 7 both ways (a traceback, before); with an absolute -R it works."""
    _model(sh.root)
    assert sh.run("commit", "m", "model.bin", "-m", "one", TVC_DAEMON="0").returncode == 0
    sh.run("daemon", "start")
    sh.wait_for_helper()
    tvc = Path(sys.executable).with_name("tvc")
    gone = sh.root / "gone"
    results = {}
    for daemon in ("1", "0"):
        for argv in (f"{tvc} log m", f"{tvc} -R {sh.root} log m"):
            gone.mkdir()
            r = subprocess.run(
                ["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec {argv}'],
                env={**sh.env, "TVC_DAEMON": daemon},
                capture_output=True,
                text=True,
                timeout=60,
            )
            results.setdefault(argv, []).append((r.returncode, r.stdout, r.stderr))
    (plain, with_r) = results.values()
    assert plain[0] == plain[1] and with_r[0] == with_r[1]
    code, out, err = plain[0]
    assert code == 7 and out == "" and "working directory no longer exists" in err
    assert err.count("\n") == 1
    assert with_r[0][0] == 0 and "one" in with_r[0][1]


@contextlib.contextmanager
def _writer_held(sh: Shell):
    """Hold the registry's write lock (the metadata DB's) until the block ends."""
    db = sqlite3.connect(sh.root / ".tvc" / "tvc.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


def _held_commit(sh: Shell, daemon: str, preexec=None) -> tuple[subprocess.Popen, int | None]:
    """A `tvc commit` waiting for the write lock the caller holds; with the helper on, once
    its child exists (its pid returned)."""
    p = subprocess.Popen(
        sh.cmd("commit", "m", "model.bin", "-m", f"held {daemon}"),
        cwd=sh.root,
        env={**sh.env, "TVC_DAEMON": daemon},
        preexec_fn=preexec,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if daemon == "0":
        return p, None
    helper = sh.helpers()[0]["pid"]
    assert launcher.wait_until(lambda: sh.children(helper), 30)
    child = sh.children(helper)[0]
    # A child is in the work tree (it took the client's directory) just before it tells the
    # client its pid; killed in between, the client rightly runs the command itself. Once it
    # has the registry's DB open, it has told it and the command is under way.
    assert launcher.wait_until(lambda: _has_open(child, "tvc.db"), 30)
    return p, child


def _has_open(pid: int, name: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(os.sep + name):
                return True
    return False


def test_parity_nohup_keeps_sighup_ignored(sh):
    """`nohup tvc commit …` then SIGHUP: the commit goes on, as in a cold process (the client
    used to forward SIGHUP to a child that had it at its default, and nothing was committed)."""
    _model(sh.root)
    sh.run("daemon", "start")
    sh.wait_for_helper()
    outcomes = []
    for daemon in ("1", "0"):
        with _writer_held(sh):
            p, child = _held_commit(
                sh, daemon, preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)
            )
            p.send_signal(signal.SIGHUP)  # as a hangup reaches the caller's process group
            # Both the client and the child ignore it, as a cold process does.
            for pid in (p.pid, child) if child else (p.pid,):
                status = Path(f"/proc/{pid}/status").read_text()
                (ignored,) = [x.split()[1] for x in status.splitlines() if x.startswith("SigIgn")]
                assert int(ignored, 16) & (1 << (signal.SIGHUP - 1)), (daemon, pid)
        _out, err = p.communicate(timeout=60)
        outcomes.append((p.returncode, err))
    assert outcomes == [(0, ""), (0, "")]
    log = json.loads(sh.run("log", "m", "--json").stdout)
    assert [v["message"] for v in log] == ["held 0", "held 1"]


def test_a_killed_helper_is_no_false_failure(sh):
    """The helper dies while its child commits: the client waits for the child and reports its
    real status (it said "failure" while the version was committed, and a retry duplicated it)."""
    _model(sh.root)
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()["pid"]
    with _writer_held(sh):
        p, _child = _held_commit(sh, "1")
        os.kill(helper, signal.SIGKILL)
        assert launcher.wait_until(lambda: not Path(f"/proc/{helper}/cmdline").read_bytes(), 30)
        assert p.poll() is None  # still waiting for its command
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.startswith("m@v1 ")
    log = sh.run("log", "m", "--json", TVC_DAEMON="0")  # (on, it would start a new helper)
    assert [v["version"] for v in json.loads(log.stdout)] == [1]


def test_a_killed_helper_and_child_is_a_failure_said_once(sh):
    _model(sh.root)
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()["pid"]
    with _writer_held(sh):
        p, child = _held_commit(sh, "1")
        os.kill(helper, signal.SIGKILL)
        os.kill(child, signal.SIGKILL)
        _out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and err.count("\n") == 1 and "killed" in err


def test_accepts_never_block(sh):
    """A client that connects and says nothing (or half a request) holds up no one: another
    command runs and ends while it is still connected, and it is served when it goes on."""
    sh.run("daemon", "start")
    helper = sh.wait_for_helper()
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(helper["socket"])
    payload = launcher._request(["--version"])
    half = socket.socket(socket.AF_UNIX)
    half.connect(helper["socket"])
    out_r, out_w = os.pipe()
    head = launcher._HEADER.pack(launcher.PROTOCOL, len(payload))
    with open(os.devnull) as null:
        fds = [null.fileno(), out_w, out_w]
        socket.send_fds(half, [head[:3]], fds)  # the fds and 3 bytes of the header
        r = sh.run("log", "--help", TVC_DAEMON_REPORT=str(sh.root / "r"))
        assert r.returncode == 0 and (sh.root / "r").exists()  # it ran in the helper
        for conn in (silent, half):  # still connected: never dropped for being slow
            conn.setblocking(False)
            with pytest.raises(BlockingIOError):
                conn.recv(1)
            conn.setblocking(True)
        half.sendall(head[3:] + payload)
        frames = launcher.Frames(half)
        assert "pid" in frames.next()
        end = frames.next()
        while end.get("by") == "child":
            end = frames.next()
        assert end["exit"] == 0
    os.close(out_w)
    with os.fdopen(out_r) as f:
        assert f.read().startswith("tvc ")
    silent.close()
    half.close()


def test_the_child_takes_the_callers_limits_and_nice_value(sh):
    """Lower limits and a higher nice value are the child's too; a caller the helper cannot
    stand in for (a higher hard limit) runs its command itself."""
    _model(sh.root)
    sh.run("daemon", "start")
    sh.wait_for_helper()["pid"]
    with _writer_held(sh):

        def lowered() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (200, 300))
            os.nice(3)

        p, child = _held_commit(sh, "1", preexec=lowered)
        limits = Path(f"/proc/{child}/limits").read_text()
        nice = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[16])
    assert p.wait(60) == 0
    (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
    assert line.split()[3:5] == ["200", "300"]
    assert nice == os.nice(0) + 3
    assert sh.run("daemon", "stop").returncode == 0

    # A helper started under a lower hard limit cannot raise it for a caller: it refuses, and
    # the command runs cold (no helper report), with the caller's limits.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(hard, 4096) // 2
    start = subprocess.run(
        sh.cmd("daemon", "start"),
        env=sh.env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, low)),
        capture_output=True,
        timeout=60,
    )
    assert start.returncode == 0, start.stderr
    sh.wait_for_helper()
    r = sh.run("log", "m", TVC_DAEMON_REPORT=str(sh.root / "refused"))
    assert r.returncode == 0 and "held 1" in r.stdout
    assert not (sh.root / "refused").exists()  # ran in its own process
    r = subprocess.run(
        sh.cmd("log", "m"),
        cwd=sh.root,
        env={**sh.env, "TVC_DAEMON_REPORT": str(sh.root / "served")},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, low)),
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0 and (sh.root / "served").exists()  # the same limits: served


def test_a_caller_in_another_cgroup_is_refused():
    """Its command runs in its own process, inside its own job's accounting."""
    from tvc.cli import daemon

    request = launcher.load(launcher._request(["log"]))
    assert daemon._unlike(request, daemon._cgroup()) is None
    assert daemon._unlike(request, "0::/other.slice\n") == "another cgroup"
    higher = dict(request, nice=request["nice"] - 1)
    if os.nice(0) > -20:
        assert "nice" in daemon._unlike(higher, daemon._cgroup())


def test_parity_the_issues_failures(sh):
    """Issue 12's failing inputs give the same line and exit code with the helper on and off."""
    _model(sh.root)
    assert sh.run("commit", "m", "model.bin", "-m", "one", TVC_DAEMON="0").returncode == 0
    (sh.root / "loop").mkdir()
    os.symlink("self", sh.root / "loop" / "self")
    (sh.root / "bytes").mkdir()
    (sh.root / "bytes" / os.fsdecode(b"\xff.bin")).write_bytes(b"x")
    (sh.root / "file").write_text("in the way")
    sh.run("daemon", "start")
    sh.wait_for_helper()
    kw = {"cwd": sh.root, "capture_output": True, "timeout": 60}
    for argv in (
        ("commit", "m", "loop", "-m", "a symlink loop"),
        ("commit", "m", "bytes", "-m", "a non-UTF-8 name"),
        ("checkout", "m", "file"),
        ("checkout", "m", "file/below"),
        ("checkout", "m", "x" * 300),
        ("log", "m", "-n", "99999999999999999999"),
        ("search", "", "--limit", "-1"),
    ):
        warm, cold = _both_ways(sh, *argv, **kw)
        assert warm == cold, argv
        assert warm[0] != 0 and warm[2].count(b"\n") in (1, 4), (argv, warm)  # Click: 4 lines
        assert b"Traceback" not in warm[2]
    warm, cold = _both_ways(sh, "tag", "m", "t", env={"TVC_LOCK_TIMEOUT": "abc"}, **kw)
    assert warm == cold and warm[0] == 2 and b"TVC_LOCK_TIMEOUT" in warm[2]
