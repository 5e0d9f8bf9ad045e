"""Remotes side by side: tvc against a ``tvc server``, DVC against a DVC remote, and git-lfs
against a Git LFS server (giftless), all on this machine, for the same base + fine-tune pair.

A generated FP32 safetensors model (``--size-mb``) and a fine-tune of it (its top ``--changed``
fraction of tensors perturbed, at least one) are made once. Then, ``--runs`` times, each tool
gets a fresh remote and:

* **push base**: the base version goes to the remote;
* **push fine-tune**: the fine-tune goes to the same remote;
* **pull**: a copy that already has the base (cloned or pulled before the fine-tune was
  pushed, untimed) brings the fine-tune in;
* **clone**: a fresh copy from the remote (tvc: every version into a registry; DVC: a fresh
  workspace and ``dvc pull``; git-lfs: ``git clone`` without smudge, then ``git lfs pull`` of
  the checked-out version);
* tvc only: **lazy clone** (metadata) and **lazy 1 tensor** (one tensor read from it).

How each tool is set up:

* tvc: ``tvc server`` on a free loopback port with a write token; cold ``tvc`` processes.
* DVC: ``dvc init --no-scm`` workspaces and a local-directory remote; ``dvc add`` is untimed
  (it is DVC's commit), ``dvc push`` / ``dvc pull`` are timed.
* git-lfs: giftless (from ``bench/.work/venv-giftless``, see bench/setup.sh) under gunicorn on a
  free loopback port, local storage, anonymous read-write, a config file written here; a bare
  git repository as ``origin`` and ``lfs.url`` pointing at giftless. ``git add`` + ``commit``
  are untimed; ``git lfs push --all origin`` is timed (then an untimed ``git push`` of the
  commits).

Columns: seconds (median over runs), model MB/s (the logical size of the versions the step
delivers, divided by the seconds), wire MB (bytes on the wire, where the tool reports them:
tvc's ``--json``; DVC and git-lfs move whole files, uncompressed, so theirs equal what they
add), added MB (bytes the step added to the receiving side: the remote's store for a push,
the local store/cache for a pull or clone), and the peak RSS of the client (and the server).

Every server the bench starts is stopped at the end, also on error. Nothing asserts on time.

    .venv/bin/python bench/remote_bench.py --size-mb 200 --runs 1
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
DVC_BIN = WORK / "venv-dvc" / "bin" / "dvc"
GUNICORN = WORK / "venv-giftless" / "bin" / "gunicorn"
GNU_TIME = "/usr/bin/time"
TVC = [sys.executable, "-m", "tvc"]
TOOLS = ("tvc", "dvc", "git-lfs")
STEPS = ("push base", "push fine-tune", "pull", "clone", "lazy clone", "lazy 1 tensor")
FILE = "model.safetensors"
TENSOR = "layers.0.weight"
READ_ONE = (
    "import sys, tvc; r = tvc.Registry(sys.argv[1]); "
    f"print(r.open('m@v1').tensor('{TENSOR}').nbytes)"
)


class BenchError(RuntimeError):
    """A tool command failed; the message names the command and the tail of its stderr."""


WIDTH = 2048  # every tensor is WIDTH × WIDTH FP32: 16.8 MB


def layout(size_mb: int, changed: float) -> tuple[int, int]:
    """(tensors in the model, tensors the fine-tune changes: at least one)."""
    n = max(1, size_mb * 1_000_000 // (WIDTH * WIDTH * 4))
    return n, max(1, round(changed * n))


def make_model(path: Path, size_mb: int, changed: float, seed: int = 0, base=None) -> dict:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    n, k = layout(size_mb, changed)
    # The fine-tune moves the top k layers (as training only the top layers does).
    moved = set(range(n - k, n)) if base is not None else set()
    tensors = {}
    for i in range(n):
        name = f"layers.{i}.weight"
        if base is not None:
            w = base[name]
            if i in moved:
                w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-4
        else:
            w = rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) * 0.02
        tensors[name] = w
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / FILE))
    return tensors


def make_pair(work: Path, size_mb: int, changed: float) -> None:
    base = make_model(work / "v1", size_mb, 0)
    make_model(work / "v2", size_mb, changed, seed=1, base=base)


# ---------------------------------------------------------------------------------------------
# processes


def timed(
    cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None, env=None
) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes of the process and its children, stdout).

    The peak comes from GNU time's %M when it is installed: a child of this process would
    inherit this interpreter's high-water mark across fork + exec, a floor of ~20 MB that
    hides a small tool's (git-lfs's) own peak.
    """
    argv = list(map(str, cmd))
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as tf:
        if os.access(GNU_TIME, os.X_OK):
            argv = [GNU_TIME, "-f", "%M", "-o", tf.name, *argv]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        proc.stdout.close()
        _pid, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        if code:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-6:]
            raise BenchError(f"`{' '.join(map(str, cmd))}` exited {code}: " + " | ".join(tail))
        lines = [ln for ln in Path(tf.name).read_text().splitlines() if ln.strip()]
    if argv[0] == GNU_TIME and lines and lines[-1].isdigit():
        return dt, int(lines[-1]) * 1024, out
    return dt, usage.ru_maxrss * 1024, out


def run(cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None, env=None) -> str:
    """An untimed helper command; its stdout."""
    return timed(cmd, cwd=cwd, env=env)[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    """Until ``port`` accepts a connection; fails if the server exits first (or after 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited {proc.returncode} before it listened on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not listen on {port} within 60 s")


@contextlib.contextmanager
def server(cmd: Sequence[str | os.PathLike[str]], port: int, what: str, **kw) -> Iterator:
    """A server process in its own session, stopped with its whole process group on exit
    (SIGTERM, then SIGKILL after 20 s), also when the body raises."""
    proc = subprocess.Popen(list(map(str, cmd)), start_new_session=True, **kw)
    try:
        wait_port(port, proc, what)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their master
            os.killpg(proc.pid, signal.SIGKILL)


def hwm(pid: int) -> int:
    """Peak RSS of ``pid`` and of its direct children (gunicorn's workers), in bytes."""
    pids = [pid]
    with contextlib.suppress(OSError):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    peak = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
    return peak


def tree_bytes(path: Path) -> int:
    """Apparent size of the regular files under ``path`` (a hard-linked inode counts once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen and (st.st_mode & 0o170000) == 0o100000:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def place(src: Path, dest: Path) -> None:
    """A fresh copy of ``src`` at ``dest`` (DVC moves what it adds: never give it the source)."""
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    shutil.copyfile(src, dest)


def same(a: Path, b: Path) -> None:
    if not filecmp.cmp(a, b, shallow=False):
        raise BenchError(f"{b} differs from {a} after the transfer")


def row(s: float, added: int, model: int, rss: int, wire: int | None = None, **kw) -> dict:
    return {"s": s, "added": added, "model": model, "rss": rss, "wire": wire, **kw}


# ---------------------------------------------------------------------------------------------
# the tools: each runs every step once against a fresh remote and returns {step: row}


def bench_tvc(work: Path, d: Path, env: dict[str, str]) -> dict[str, dict]:
    def packs(reg: Path) -> int:
        return sum(p.stat().st_size for p in (reg / ".tvc" / "objects" / "packs").glob("*/*.pack"))

    v1, v2 = work / "v1", work / "v2"
    size = (v1 / FILE).stat().st_size
    srv, a = d / "srv", d / "a"
    run([*TVC, "init", srv], env=env)
    secret = run([*TVC, "token", "create", "bench", "--scope", "write", "--data", srv], env=env)
    run([*TVC, "init", a], env=env)
    run([*TVC, "-R", a, "commit", "m", v1, "-m", "base", "-q"], env=env)
    cenv = {**env, "TVC_TOKEN": secret.strip()}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rows: dict[str, dict] = {}
    cmd = [*TVC, "server", "--data", srv, "--port", port]
    with server(cmd, port, "tvc server", env=env, stderr=subprocess.DEVNULL) as proc:

        def step(name: str, cmd: list, store: Path, model: int) -> None:
            before = packs(store)
            s, rss, out = timed(cmd, env=cenv)
            wire = json.loads(out)["bytes_sent"]
            rows[name] = row(s, packs(store) - before, model, rss, wire)

        step("push base", [*TVC, "-R", a, "push", url, "m", "--json", "-q"], srv, size)
        p = d / "p"  # the copy that will pull the fine-tune: a clone at the base
        run([*TVC, "clone", url, p, "-q"], env=cenv)
        run([*TVC, "-R", a, "commit", "m", v2, "-m", "ft", "-q"], env=env)
        step("push fine-tune", [*TVC, "-R", a, "push", url, "m", "--json", "-q"], srv, size)
        step("pull", [*TVC, "-R", p, "pull", "--json", "-q"], p, size)
        run([*TVC, "-R", p, "checkout", "m@v2", d / "pulled", "-q"], env=env)
        same(v2 / FILE, d / "pulled" / FILE)
        c = d / "c"
        step("clone", [*TVC, "clone", url, c, "--json", "-q"], c, 2 * size)
        run([*TVC, "-R", c, "checkout", "m@v2", d / "check", "-q"], env=env)
        same(v2 / FILE, d / "check" / FILE)
        lz = d / "l"
        s, rss, out = timed([*TVC, "clone", url, lz, "--lazy", "--json", "-q"], env=cenv)
        rows["lazy clone"] = row(s, packs(lz), 0, rss, json.loads(out)["bytes_sent"])
        before = packs(lz)
        s, rss, out = timed([sys.executable, "-c", READ_ONE, lz], env=cenv)
        moved = packs(lz) - before  # the chunks fetched and cached: what crossed the wire
        rows["lazy 1 tensor"] = row(s, moved, int(out.strip()), rss, moved)
        server_rss = hwm(proc.pid)
    for r in rows.values():
        r["server_rss"] = server_rss
    return rows


def bench_dvc(work: Path, d: Path, env: dict[str, str]) -> dict[str, dict]:
    v1, v2 = work / "v1" / FILE, work / "v2" / FILE
    size = v1.stat().st_size
    env = {
        **env,
        "HOME": str(d / "home"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(d / "site-cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(d / "home" / "dvc-global"),
    }
    remote = d / "remote"
    remote.mkdir(parents=True)
    (d / "home").mkdir()

    def workspace(name: str) -> Path:
        ws = d / name
        ws.mkdir()
        run([DVC_BIN, "init", "--no-scm", "-q"], cwd=ws, env=env)
        run([DVC_BIN, "remote", "add", "-d", "bench", remote], cwd=ws, env=env)
        return ws

    def timed_dvc(ws: Path, *args: str) -> tuple[float, int]:
        s, rss, _out = timed([DVC_BIN, *args], cwd=ws, env=env)
        return s, rss

    rows: dict[str, dict] = {}
    a = workspace("a")
    place(v1, a / FILE)
    run([DVC_BIN, "add", "-q", FILE], cwd=a, env=env)
    before = tree_bytes(remote)
    s, rss = timed_dvc(a, "push", "-q")
    rows["push base"] = row(s, tree_bytes(remote) - before, size, rss)

    p = workspace("p")  # has the base before the fine-tune exists
    shutil.copyfile(a / f"{FILE}.dvc", p / f"{FILE}.dvc")
    run([DVC_BIN, "pull", "-q"], cwd=p, env=env)

    place(v2, a / FILE)
    run([DVC_BIN, "add", "-q", FILE], cwd=a, env=env)
    before = tree_bytes(remote)
    s, rss = timed_dvc(a, "push", "-q")
    rows["push fine-tune"] = row(s, tree_bytes(remote) - before, size, rss)

    shutil.copyfile(a / f"{FILE}.dvc", p / f"{FILE}.dvc")
    before = tree_bytes(p / ".dvc" / "cache")
    s, rss = timed_dvc(p, "pull", "-q")
    rows["pull"] = row(s, tree_bytes(p / ".dvc" / "cache") - before, size, rss)
    same(v2, p / FILE)

    c = workspace("c")
    shutil.copyfile(a / f"{FILE}.dvc", c / f"{FILE}.dvc")
    s, rss = timed_dvc(c, "pull", "-q")
    rows["clone"] = row(s, tree_bytes(c / ".dvc" / "cache"), size, rss)
    same(v2, c / FILE)
    return rows


GIFTLESS_CONFIG = """\
# written by bench/remote_bench.py: local storage, anonymous read-write, loopback only
LEGACY_ENDPOINTS: false
AUTH_PROVIDERS:
  - giftless.auth.allow_anon:read_write
TRANSFER_ADAPTERS:
  basic:
    options:
      storage_options:
        path: {storage}
PRE_AUTHORIZED_ACTION_PROVIDER:
  options:
    private_key: {key}
"""


def bench_gitlfs(work: Path, d: Path, env: dict[str, str]) -> dict[str, dict]:
    v1, v2 = work / "v1" / FILE, work / "v2" / FILE
    size = v1.stat().st_size
    home, storage = d / "home", d / "storage"
    home.mkdir(parents=True)
    storage.mkdir()
    env = {
        **env,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }
    nosmudge = {**env, "GIT_LFS_SKIP_SMUDGE": "1"}
    conf = d / "giftless.yaml"
    conf.write_text(GIFTLESS_CONFIG.format(storage=storage, key=secrets.token_hex(16)))
    port = free_port()
    lfs_url = f"http://127.0.0.1:{port}/bench/model.git/info/lfs"
    senv = {**os.environ, "GIFTLESS_CONFIG_FILE": str(conf), "HOME": str(home)}
    # Two sync workers, no worker timeout (an upload of a GB file takes longer than 30 s).
    cmd = [GUNICORN, "--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "0"]
    cmd += ["--log-level", "warning", "giftless.wsgi_entrypoint:app"]
    rows: dict[str, dict] = {}
    log = (d / "giftless.log").open("wb")
    with log, server(cmd, port, "giftless", cwd=d, env=senv, stdout=log, stderr=log) as proc:
        origin, a = d / "origin.git", d / "a"
        # The LFS filters in the private HOME's config: every clone below smudges with them.
        run(["git", "lfs", "install", "--skip-repo"], env=env)
        run(["git", "init", "-q", "--bare", "-b", "main", origin], env=env)
        run(["git", "init", "-q", "-b", "main", a], env=env)

        def git(repo: Path, *args: str | os.PathLike[str], e=env) -> str:
            return run(["git", "-C", repo, *args], env=e)

        git(a, "lfs", "track", "*.safetensors")
        # .lfsconfig travels with the repository, so every clone finds the LFS server.
        (a / ".lfsconfig").write_text(f'[lfs]\n\turl = "{lfs_url}"\n\tlocksverify = false\n')
        git(a, "remote", "add", "origin", origin)
        git(a, "add", ".gitattributes", ".lfsconfig")
        git(a, "commit", "-q", "-m", "track weights with lfs")

        def push(name: str) -> None:
            before = tree_bytes(storage)
            s, rss, _ = timed(["git", "-C", a, "lfs", "push", "--all", "origin"], env=env)
            rows[name] = row(s, tree_bytes(storage) - before, size, rss)
            git(a, "push", "-q", "origin", "main")  # the commits; their LFS objects are there

        shutil.copyfile(v1, a / FILE)
        git(a, "add", FILE)
        git(a, "commit", "-q", "-m", "base")
        push("push base")
        p = d / "p"  # has the base before the fine-tune exists
        run(["git", "clone", "-q", origin, p], env=env)
        same(v1, p / FILE)

        shutil.copyfile(v2, a / FILE)
        git(a, "add", FILE)
        git(a, "commit", "-q", "-m", "fine-tune")
        push("push fine-tune")

        objs = p / ".git" / "lfs" / "objects"
        before = tree_bytes(objs)
        s1, rss1, _ = timed(["git", "-C", p, "pull", "-q", "--ff-only"], env=nosmudge)
        s2, rss2, _ = timed(["git", "-C", p, "lfs", "pull"], env=env)
        rows["pull"] = row(s1 + s2, tree_bytes(objs) - before, size, max(rss1, rss2))
        same(v2, p / FILE)

        c = d / "c"
        s1, rss1, _ = timed(["git", "clone", "-q", origin, c], env=nosmudge)
        s2, rss2, _ = timed(["git", "-C", c, "lfs", "pull"], env=env)
        added = tree_bytes(c / ".git" / "lfs" / "objects")
        rows["clone"] = row(s1 + s2, added, size, max(rss1, rss2))
        same(v2, c / FILE)
        server_rss = hwm(proc.pid)
    for r in rows.values():
        r["server_rss"] = server_rss
    return rows


BENCHES: dict[str, Callable[[Path, Path, dict[str, str]], dict[str, dict]]] = {
    "tvc": bench_tvc,
    "dvc": bench_dvc,
    "git-lfs": bench_gitlfs,
}


def missing(tool: str) -> str | None:
    """Why ``tool`` cannot run here (bench/setup.sh installs it), or None."""
    if tool == "dvc" and not DVC_BIN.exists():
        return f"no DVC at {DVC_BIN} (run bench/setup.sh)"
    if tool == "git-lfs":
        if not GUNICORN.exists():
            return f"no giftless at {GUNICORN.parent} (run bench/setup.sh)"
        if subprocess.run(["git", "lfs", "version"], capture_output=True).returncode:
            return "git-lfs is not installed (run bench/setup.sh)"
    return None


def bench_remote(
    size_mb: int,
    *,
    changed: float = 0.1,
    runs: int = 1,
    tools: Sequence[str] = TOOLS,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Every step of every tool ``runs`` times; the raw rows and their medians.

    A tool that fails or is not installed is reported with its error; the others still run.
    """
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="remote-", dir=WORK))
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's tools start from cached bytecode
    env.update(TVC_DAEMON="0", TVC_AUTHOR="bench")
    res: dict[str, Any] = {
        "size_mb": size_mb,
        "changed": changed,
        "runs": runs,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "tools": {},
    }
    try:
        # In a child process: this one stays small, so the children it starts (whose peak RSS
        # is measured) do not inherit a large high-water mark through fork.
        maker = multiprocessing.get_context("fork").Process(
            target=make_pair, args=(work, size_mb, changed)
        )
        maker.start()
        maker.join()
        if maker.exitcode:
            raise BenchError(f"making the model pair failed ({maker.exitcode})")
        res["bytes"] = (work / "v1" / FILE).stat().st_size
        for tool in tools:
            why = missing(tool)
            if why:
                log(f"remote bench: {tool} skipped: {why}")
                res["tools"][tool] = {"error": why}
                continue
            raw: list[dict[str, dict]] = []
            try:
                for n in range(runs):
                    log(f"remote bench: {tool} run {n + 1}/{runs}")
                    d = work / f"{tool}{n}"
                    d.mkdir()
                    try:
                        raw.append(BENCHES[tool](work, d, env))
                    finally:
                        rmtree(d)
            except (BenchError, OSError, ValueError, KeyError) as e:
                log(f"remote bench: {tool} FAILED: {e}")
                res["tools"][tool] = {"error": f"{type(e).__name__}: {e}"}
                continue
            res["tools"][tool] = {"runs": raw, "median": medians(raw)}
    finally:
        rmtree(work)
    res["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return res


def rmtree(path: Path) -> None:
    """Remove ``path``; DVC leaves read-only files and directories behind."""
    if path.exists():
        for p in path.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def medians(raw: list[dict[str, dict]]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for step in raw[0]:
        rs = [r[step] for r in raw]
        out[step] = {
            k: statistics.median(x[k] for x in rs) if rs[0][k] is not None else None for k in rs[0]
        }
    return out


def report(res: dict[str, Any]) -> list[str]:
    """The table: one line per step × tool."""
    mb = 1e6
    n, k = layout(res["size_mb"], res["changed"])
    head = (
        f"model: {res.get('bytes', 0) / mb:.0f} MB FP32 safetensors of {n} tensors; the "
        f"fine-tune changes the top {k}; {res['runs']} run(s), medians; load average "
        f"{res['load_avg_start'][0]:.1f} at start, {res['load_avg_end'][0]:.1f} at end"
    )
    cols = ["step", "tool", "s", "model MB/s", "wire MB", "added MB", "client RSS MiB"]
    cols.append("server RSS MiB")
    rows: list[list[str]] = []
    for step in STEPS:
        for tool in TOOLS:
            t = res["tools"].get(tool)
            if t is None or (step.startswith("lazy") and tool != "tvc"):
                continue
            if "error" in t:
                if step == STEPS[0]:
                    rows.append([step, tool, "ERROR: " + t["error"][:120]] + [""] * 5)
                continue
            r = t["median"].get(step)
            if r is None:
                continue
            rows.append(
                [
                    step,
                    tool,
                    f"{r['s']:.2f}",
                    f"{r['model'] / mb / r['s']:.0f}" if r["model"] else "-",
                    f"{r['wire'] / mb:.1f}" if r["wire"] is not None else "-",
                    f"{r['added'] / mb:.1f}",
                    f"{r['rss'] / 2**20:.0f}",
                    f"{r['server_rss'] / 2**20:.0f}" if r.get("server_rss") else "-",
                ]
            )
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "model MB/s: the logical size of the versions a step delivers ÷ its seconds (tvc clone "
        "delivers both versions, the others' clone the checked-out one). wire: what tvc "
        "reports (`--json` bytes_sent); DVC and git-lfs move whole files uncompressed, so "
        "their wire equals their added. added: bytes new in the remote's store (push) or in "
        "the local store / cache (pull, clone). pull: a copy at the base brings the fine-tune.",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--changed", type=float, default=0.1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(TOOLS), help="tools among tvc,dvc,git-lfs")
    args = ap.parse_args()
    tools = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tool(s) {sorted(unknown)}; choose from {','.join(TOOLS)}")
    res = bench_remote(args.size_mb, changed=args.changed, runs=args.runs, tools=tools)
    print("\n".join(report(res)))


if __name__ == "__main__":
    main()
