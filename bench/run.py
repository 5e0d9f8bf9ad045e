"""`make bench`: tvc side by side with git-lfs, DVC, borg, restic and ZipNN, in one run.

Sections (see bench/README.md for how to read them)
1. *Version chains*: every tool ingests the same versions in the same order, one
   commit / archive / snapshot per version, into a fresh repository; then the first and the
   last version are checked out / extracted into an empty directory and verified against the
   corpus (BLAKE3). Measured: stored bytes, ingest wall time of the whole chain, checkout wall
   time, peak RSS of every tool process (GNU time's %M). Chains: the FP32 chain, the BF16
   chain, and the 4 GB pair.
2. *Single-file compression*: tvc's chunk codecs on the chunks tvc's own format layer cuts,
   against ZipNN and zstd-3 on the whole file; ratio and MB/s, all on two threads.
3. *Ratios against the peers* and the targets of issue 3, each with ✓/✗.
4. *Search latency* (issue 4): ``bench/search_bench.py``'s numbers, skipped while
   ``tvc search`` does not exist.
5. *Remotes* (issue 13): push, pull and clone of a generated base + fine-tune pair
   (``--remote-size-mb``) with tvc against a ``tvc server``, DVC against a local-directory
   remote and git-lfs against a giftless LFS server (``bench/remote_bench.py``).

Times are medians of ``--runs`` runs (the 4 GB pair: ``--large-runs``, default 1). Nothing
here asserts on time; the machine is shared and noisy. Results also go to
``bench/.work/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import stat
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
RUNS_DIR = WORK / "runs"
RESULTS = WORK / "results.json"
VENV_BIN = ROOT / ".venv" / "bin"
DVC_BIN = WORK / "venv-dvc" / "bin" / "dvc"
GNU_TIME = "/usr/bin/time"
FILE = "model.safetensors"  # the name every version has inside every tool's repository

sys.path.insert(0, str(HERE))
import corpus  # noqa: E402
import remote_bench  # noqa: E402
import small_bench  # noqa: E402

ALL_TOOLS = ("tvc", "tvc-api", "git-lfs", "dvc", "borg", "restic", "zipnn")
PEERS = ALL_TOOLS[2:]
SEARCH_VERSIONS = 10_000


def base_env() -> dict[str, str]:
    """The environment for every tool process: ours, minus PYTHONDONTWRITEBYTECODE.

    A user's Python tools (tvc, borg, DVC) start from cached bytecode; this sandbox sets
    PYTHONDONTWRITEBYTECODE, which would make every start re-compile tvc's own modules.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["TVC_DAEMON"] = "0"  # only the `tvc` chain row uses the helper, in a directory of its own
    return env


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# running and measuring tool processes


class ToolError(RuntimeError):
    """A tool command failed; the message carries the command and the tail of its stderr."""


@dataclass
class Proc:
    wall: float  # seconds
    rss: int  # peak resident set size, bytes (the process and its reaped children)
    out: str = ""


def timed(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: pathlib.Path | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Run ``cmd`` under GNU time: wall time (measured here) and peak RSS (%M)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time", dir=WORK) as tf:
        argv = [GNU_TIME, "-f", "%M", "-o", tf.name, *map(str, cmd)]
        env = base_env() if env is None else env
        t0 = time.perf_counter()
        r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        lines = [ln for ln in pathlib.Path(tf.name).read_text().splitlines() if ln.strip()]
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-6:]
        raise ToolError(f"`{' '.join(map(str, cmd))}` exited {r.returncode}: " + " | ".join(tail))
    rss = int(lines[-1]) * 1024 if lines and lines[-1].isdigit() else 0
    return Proc(wall, rss, r.stdout)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: pathlib.Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run an untimed helper command; raise ToolError on failure; return stdout."""
    env = base_env() if env is None else env
    r = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-6:]
        raise ToolError(f"`{' '.join(map(str, cmd))}` exited {r.returncode}: " + " | ".join(tail))
    return r.stdout


def tree_bytes(path: pathlib.Path) -> int:
    """Apparent size of every regular file under ``path`` (a hard-linked inode counts once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) in seen or not stat.S_ISREG(st.st_mode):
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def rmtree(path: pathlib.Path) -> None:
    if path.exists():
        for p in path.rglob("*"):  # restic and DVC leave read-only files and directories
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
        shutil.rmtree(path)


def place(src: pathlib.Path, dest: pathlib.Path, *, copy: bool = False) -> None:
    """Put ``src`` at ``dest`` (replacing it): a hard link, or a copy for tools that move it."""
    tmp = dest.with_name(dest.name + ".place")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    if copy:
        shutil.copyfile(src, tmp)
    else:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def warm(paths: Sequence[pathlib.Path]) -> None:
    """Read files once, untimed, so every tool finds them in the page cache.

    Without it the first tool of a run pays the disk for the whole corpus (9 GB for the large
    pair: ~16 s here), and with one run of the large pair that is always the same tool.
    """
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(8 << 20):
                pass


_DIGESTS: dict[str, str] = {}


def digest(path: pathlib.Path) -> str:
    import blake3

    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(str(path))
    return h.hexdigest()


def corpus_digest(item: corpus.Item) -> str:
    if item.path not in _DIGESTS:
        _DIGESTS[item.path] = digest(corpus.CORPUS / item.path)
    return _DIGESTS[item.path]


# ---------------------------------------------------------------------------------------------
# the tools: each knows how to make an empty repository, ingest one version, report its stored
# bytes, and restore one version into an empty directory


class Tool:
    name = ""

    def __init__(self, d: pathlib.Path):
        self.d = d
        self.refs: list[Any] = []  # what restore() needs to find version i

    @classmethod
    def version(cls) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return base_env()

    def init(self) -> None:
        raise NotImplementedError

    def ingest(self, item: corpus.Item) -> list[Proc]:
        raise NotImplementedError

    def stored(self) -> int:
        raise NotImplementedError

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        raise NotImplementedError

    def extra(self, full: bool) -> dict[str, Any]:
        """Anything else worth recording after ingest (tvc: stats, fsck)."""
        return {}


def _first_line(cmd: Sequence[str | os.PathLike[str]]) -> str:
    try:
        out = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=120)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not installed"


def _tvc_cmd() -> list[str]:
    exe = VENV_BIN / "tvc"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tvc"]


class Tvc(Tool):
    name = "tvc"

    @classmethod
    def version(cls) -> str:
        ver = importlib.metadata.version("tvc")
        rev = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
        dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).strip()
        return f"tvc {ver} ({rev}{'+dirty' if dirty else ''})"

    use_helper = True  # the console script's resident helper (tvc.cli.daemon), as a user has it

    def __init__(self, d: pathlib.Path):
        super().__init__(d)
        self.reg = d / "reg"
        self.stage = d / "stage"
        self.counts: dict[str, int] = {}
        self.rundir = d / "run"  # the helper's socket: private to this run
        self.usage = d / "usage.jsonl"  # the helper's report of each command's child

    def env(self) -> dict[str, str]:
        env = base_env()
        if self.use_helper:
            env["TVC_DAEMON"] = "1"
            env["TVC_DAEMON_DIR"] = str(self.rundir)
            env["TVC_DAEMON_REPORT"] = str(self.usage)
        return env

    def tvc(self, *args: str | os.PathLike[str]) -> list[str | os.PathLike[str]]:
        return [*_tvc_cmd(), "-R", self.reg, *args]

    def timed(self, cmd: Sequence[str | os.PathLike[str]]) -> Proc:
        """Time a command; its peak RSS is the larger of the client's and the helper's child's."""
        seen = len(self.usage.read_text().splitlines()) if self.usage.exists() else 0
        p = timed(cmd, env=self.env())
        if self.usage.exists():
            for line in self.usage.read_text().splitlines()[seen:]:
                p.rss = max(p.rss, int(json.loads(line)["maxrss"]))
        return p

    def init(self) -> None:
        self.stage.mkdir(parents=True)
        if self.use_helper:
            self.rundir.mkdir(mode=0o700)
        run([*_tvc_cmd(), "init", self.reg], env=self.env())
        if self.use_helper:
            # As a user's first command does, `init` runs cold and starts the helper in the
            # background; waited for here, untimed like every tool's init. Its start is in the
            # start-up table; the first command of a session pays ≈ 0.4 s more than the rest.
            run([*_tvc_cmd(), "daemon", "start"], env=self.env())

    def ingest(self, item: corpus.Item) -> list[Proc]:
        place(corpus.CORPUS / item.path, self.stage / FILE)
        n = self.counts.get(item.model, 0) + 1
        args = ["commit", item.model, self.stage, "-m", item.key, "-q"]
        if item.base and n == 1:
            args += ["--base", item.base]
        p = self.timed(self.tvc(*args))
        self.counts[item.model] = n
        self.refs.append(f"{item.model}@v{n}")
        return [p]

    def stored(self) -> int:
        return tree_bytes(self.reg / ".tvc")

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        return [self.timed(self.tvc("checkout", self.refs[i], dest, "-q"))], dest / FILE

    def close(self) -> None:
        if self.use_helper and self.rundir.exists():
            with contextlib.suppress(ToolError):
                run([*_tvc_cmd(), "daemon", "stop"], env=self.env())

    def extra(self, full: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"stats": json.loads(run(self.tvc("stats", "--json")))}
        if full:
            try:
                p = self.timed(self.tvc("fsck", "--read-data", "-q"))
                out["fsck"] = {"ok": True, "seconds": round(p.wall, 2), "rss": p.rss}
            except ToolError as e:
                out["fsck"] = {"ok": False, "error": str(e)}
        return out


class TvcApi(Tvc):
    """tvc through its Python API in one long-lived process (``bench/tvc_worker.py``).

    What a training loop or a server does: import tvc once, then commit each checkpoint (and
    check versions out) with ``tvc.Registry``. The process start — imports and opening the
    registry — is timed once, as part of the first ingest. Every request is timed here, from
    writing it to reading the answer. Peak RSS comes from the worker's VmHWM, reset between
    the ingest and the checkout phase.
    """

    name = "tvc-api"
    use_helper = False

    def __init__(self, d: pathlib.Path):
        super().__init__(d)
        self.proc: subprocess.Popen[str] | None = None
        self.phase = "ingest"

    def _request(self, **req: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise ToolError(f"tvc worker died: {self.proc.stderr.read()[-500:]}")  # type: ignore[union-attr]
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ToolError(f"tvc worker: {reply.get('error')}")
        return reply

    def _timed(self, **req: Any) -> Proc:
        t0 = time.perf_counter()
        if self.proc is None:  # the first request pays the process start
            worker = [str(VENV_BIN / "python"), str(HERE / "tvc_worker.py"), str(self.reg)]
            self.proc = subprocess.Popen(
                worker,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=base_env(),
            )
            ready = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not ready:
                raise ToolError(f"tvc worker did not start: {self.proc.stderr.read()[-500:]}")  # type: ignore[union-attr]
        self._request(**req)
        wall = time.perf_counter() - t0
        return Proc(wall, self._request(op="peak")["peak"])

    def ingest(self, item: corpus.Item) -> list[Proc]:
        place(corpus.CORPUS / item.path, self.stage / FILE)
        n = self.counts.get(item.model, 0) + 1
        base = item.base if item.base and n == 1 else None
        p = self._timed(
            op="commit", model=item.model, path=str(self.stage), message=item.key, base=base
        )
        self.counts[item.model] = n
        self.refs.append(f"{item.model}@v{n}")
        return [p]

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        if self.phase == "ingest" and self.proc is not None:
            self._request(op="reset_peak")
            self.phase = "checkout"
        return [self._timed(op="checkout", ref=self.refs[i], dest=str(dest))], dest / FILE

    def cleanup_restore(self, dest: pathlib.Path) -> None:
        rmtree(dest)

    def extra(self, full: bool) -> dict[str, Any]:
        return {}  # the same store as the CLI row's: its stats and fsck are reported there

    def stored(self) -> int:
        if self.proc is not None:  # as a CLI process leaves it on exit: WAL folded into the DB
            self._request(op="checkpoint")
        return super().stored()

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self._request(op="quit")
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=30)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class GitLfs(Tool):
    name = "git-lfs"

    @classmethod
    def version(cls) -> str:
        lfs = _first_line(["git", "lfs", "version"]).split(" (")[0]
        return f"{lfs}, {_first_line(['git', '--version'])}"

    def __init__(self, d: pathlib.Path):
        super().__init__(d)
        self.repo = d / "repo"

    def env(self) -> dict[str, str]:
        e = base_env()
        e.update(
            HOME=str(self.d / "home"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="bench",
            GIT_AUTHOR_EMAIL="bench@localhost",
            GIT_COMMITTER_NAME="bench",
            GIT_COMMITTER_EMAIL="bench@localhost",
        )
        return e

    def git(self, *args: str | os.PathLike[str]) -> list[str | os.PathLike[str]]:
        return ["git", "-C", self.repo, *args]

    def init(self) -> None:
        (self.d / "home").mkdir(parents=True)
        e = self.env()
        run(["git", "init", "-q", self.repo], env=e)
        run(self.git("lfs", "install", "--local"), env=e)
        run(self.git("lfs", "track", "*.safetensors"), env=e)
        run(self.git("add", ".gitattributes"), env=e)
        run(self.git("commit", "-q", "-m", "track weights with lfs"), env=e)

    def ingest(self, item: corpus.Item) -> list[Proc]:
        place(corpus.CORPUS / item.path, self.repo / FILE)
        e = self.env()
        procs = [timed(self.git("add", FILE), env=e)]
        procs.append(timed(self.git("commit", "-q", "-m", item.key), env=e))
        self.refs.append(run(self.git("rev-parse", "HEAD"), env=e).strip())
        return procs

    def stored(self) -> int:
        return tree_bytes(self.repo / ".git" / "lfs" / "objects")

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        # A worktree of the commit: git runs the lfs smudge filter from .git/lfs/objects.
        p = timed(self.git("worktree", "add", "-q", "--detach", dest, self.refs[i]), env=self.env())
        return [p], dest / FILE

    def cleanup_restore(self, dest: pathlib.Path) -> None:
        rmtree(dest)
        run(self.git("worktree", "prune"), env=self.env())


class Dvc(Tool):
    name = "dvc"

    @classmethod
    def version(cls) -> str:
        out = _first_line([DVC_BIN, "--version"])
        return f"dvc {out}" if out[:1].isdigit() else out

    def __init__(self, d: pathlib.Path):
        super().__init__(d)
        self.repo = d / "repo"

    def env(self) -> dict[str, str]:
        e = GitLfs.env(self)  # type: ignore[arg-type]
        e.update(DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(self.d / "site-cache"))
        return e

    def init(self) -> None:
        (self.d / "home").mkdir(parents=True)
        self.repo.mkdir()
        e = self.env()
        run(["git", "init", "-q"], cwd=self.repo, env=e)
        run([DVC_BIN, "init", "-q"], cwd=self.repo, env=e)
        run([DVC_BIN, "config", "core.autostage", "false"], cwd=self.repo, env=e)
        run(["git", "commit", "-q", "-m", "dvc init"], cwd=self.repo, env=e)

    def ingest(self, item: corpus.Item) -> list[Proc]:
        # `dvc add` moves the file into its cache: give it a copy, never the corpus inode.
        with contextlib.suppress(FileNotFoundError):
            (self.repo / FILE).unlink()
        place(corpus.CORPUS / item.path, self.repo / FILE, copy=True)
        e = self.env()
        procs = [timed([DVC_BIN, "add", "-q", FILE], cwd=self.repo, env=e)]
        procs.append(
            timed(["git", "add", f"{FILE}.dvc", ".gitignore"], cwd=self.repo, env=e),
        )
        procs.append(timed(["git", "commit", "-q", "-m", item.key], cwd=self.repo, env=e))
        self.refs.append(run(["git", "rev-parse", "HEAD"], cwd=self.repo, env=e).strip())
        return procs

    def stored(self) -> int:
        return tree_bytes(self.repo / ".dvc" / "cache")

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        # DVC materializes into its own workspace: point the .dvc file at version i, remove the
        # data file, and time `dvc checkout` (a copy out of the cache, cache.type default).
        e = self.env()
        run(["git", "checkout", "-q", self.refs[i], "--", f"{FILE}.dvc"], cwd=self.repo, env=e)
        with contextlib.suppress(FileNotFoundError):
            (self.repo / FILE).unlink()
        p = timed([DVC_BIN, "checkout", "-q", f"{FILE}.dvc"], cwd=self.repo, env=e)
        return [p], self.repo / FILE


class Borg(Tool):
    name = "borg"
    COMPRESSION = "zstd,3"

    @classmethod
    def version(cls) -> str:
        return _first_line(["borg", "--version"])

    def __init__(self, d: pathlib.Path):
        super().__init__(d)
        self.repo = d / "repo"
        self.stage = d / "stage"

    def env(self) -> dict[str, str]:
        e = base_env()
        e.update(
            BORG_BASE_DIR=str(self.d / "home"),
            BORG_PASSPHRASE="",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
        )
        return e

    def init(self) -> None:
        self.stage.mkdir(parents=True)
        run(["borg", "init", "--encryption=none", self.repo], env=self.env())

    def ingest(self, item: corpus.Item) -> list[Proc]:
        place(corpus.CORPUS / item.path, self.stage / FILE)
        name = f"{len(self.refs):03d}-{item.key}"
        cmd = ["borg", "create", "--compression", self.COMPRESSION, f"{self.repo}::{name}", FILE]
        p = timed(cmd, cwd=self.stage, env=self.env())
        self.refs.append(name)
        return [p]

    def stored(self) -> int:
        return tree_bytes(self.repo)

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        dest.mkdir(parents=True)
        p = timed(["borg", "extract", f"{self.repo}::{self.refs[i]}"], cwd=dest, env=self.env())
        return [p], dest / FILE


class Restic(Tool):
    name = "restic"
    COMPRESSION = "max"

    @classmethod
    def version(cls) -> str:
        return _first_line(["restic", "version"]).split(" compiled")[0]

    def __init__(self, d: pathlib.Path):
        super().__init__(d)
        self.repo = d / "repo"
        self.stage = d / "stage"

    def env(self) -> dict[str, str]:
        e = base_env()
        e.update(
            RESTIC_REPOSITORY=str(self.repo),
            RESTIC_PASSWORD="bench",
            RESTIC_CACHE_DIR=str(self.d / "cache"),
        )
        return e

    def init(self) -> None:
        self.stage.mkdir(parents=True)
        run(["restic", "init", "-q", "--repository-version", "2"], env=self.env())

    def ingest(self, item: corpus.Item) -> list[Proc]:
        place(corpus.CORPUS / item.path, self.stage / FILE)
        cmd = ["restic", "backup", "--compression", self.COMPRESSION, "--host", "bench"]
        p = timed([*cmd, "--json", FILE], cwd=self.stage, env=self.env())
        snap = None
        for line in p.out.splitlines():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if msg.get("message_type") == "summary":
                    snap = msg.get("snapshot_id")
        if not snap:
            raise ToolError("restic backup printed no snapshot id")
        self.refs.append(snap)
        return [p]

    def stored(self) -> int:
        return tree_bytes(self.repo)

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        p = timed(["restic", "restore", "-q", self.refs[i], "--target", dest], env=self.env())
        found = list(dest.rglob(FILE))  # restic restores the absolute path below the target
        if len(found) != 1:
            raise ToolError(f"restic restore: expected one {FILE} under {dest}, found {found}")
        return [p], found[0]


class Zipnn(Tool):
    """ZipNN is a compressor, not a version store: each version compressed on its own."""

    name = "zipnn"

    @classmethod
    def version(cls) -> str:
        try:
            return f"zipnn {importlib.metadata.version('zipnn')}"
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def __init__(self, d: pathlib.Path):
        super().__init__(d)
        self.store = d / "store"

    def init(self) -> None:
        self.store.mkdir(parents=True)

    def ingest(self, item: corpus.Item) -> list[Proc]:
        out = self.store / f"{len(self.refs):03d}-{item.key}.znn"
        src = corpus.CORPUS / item.path
        p = timed([sys.executable, __file__, "--zipnn-worker", "compress", item.dtype, src, out])
        self.refs.append((out, item.dtype))
        return [p]

    def stored(self) -> int:
        return tree_bytes(self.store)

    def restore(self, i: int, dest: pathlib.Path) -> tuple[list[Proc], pathlib.Path]:
        dest.mkdir(parents=True)
        src, dtype = self.refs[i]
        cmd = [sys.executable, __file__, "--zipnn-worker", "decompress", dtype, src, dest / FILE]
        return [timed(cmd)], dest / FILE


TOOLS: dict[str, type[Tool]] = {t.name: t for t in (Tvc, TvcApi, GitLfs, Dvc, Borg, Restic, Zipnn)}


# ---------------------------------------------------------------------------------------------
# ZipNN as a file compressor (a subprocess, so its time and RSS are measured like the others')

ZIPNN_DTYPE = {"FP32": "float32", "BF16": "bfloat16", "FP16": "float16", "F16-GGUF": "float16"}
ZIPNN_BLOCK = 64 * 1024 * 1024  # streamed in blocks: whole-file ZipNN needs ~3x the file in RAM


def zipnn_worker(op: str, dtype: str, src: str, dst: str) -> None:
    """Compress/decompress a file in ZIPNN_BLOCK blocks (each a length-prefixed ZipNN frame).

    Block boundaries are multiples of 8 bytes from the start of the file; safetensors pads its
    header to 8 bytes, so every block holds whole elements.
    """
    from zipnn import ZipNN

    zn = ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype], threads=2)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        if op == "compress":
            while block := fi.read(ZIPNN_BLOCK):
                frame = zn.compress(bytearray(block))  # in place: always a fresh copy
                fo.write(struct.pack("<Q", len(frame)))
                fo.write(frame)
        else:
            while head := fi.read(8):
                (n,) = struct.unpack("<Q", head)
                fo.write(zn.decompress(fi.read(n)))


# ---------------------------------------------------------------------------------------------
# section 1: version chains


@dataclass
class Chain:
    key: str
    title: str
    items: list[corpus.Item]
    runs: int

    @property
    def raw(self) -> int:
        return sum(i.size for i in self.items)


@dataclass
class ChainRun:
    stored: int = 0
    ingest: float = 0.0
    ingest_rss: int = 0
    checkout_first: float = 0.0
    checkout_last: float = 0.0
    checkout_rss: int = 0
    verified: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def chain_once(chain: Chain, tool_cls: type[Tool], run_no: int) -> ChainRun:
    d = RUNS_DIR / chain.key / tool_cls.name
    rmtree(d)
    d.mkdir(parents=True)
    tool = tool_cls(d)
    res = ChainRun()
    warm([corpus.CORPUS / item.path for item in chain.items])
    try:
        tool.init()
        for item in chain.items:
            for p in tool.ingest(item):
                res.ingest += p.wall
                res.ingest_rss = max(res.ingest_rss, p.rss)
        res.stored = tool.stored()
        res.extra = tool.extra(full=run_no == 0)
        ok = True
        for which, i in (("first", 0), ("last", len(chain.items) - 1)):
            dest = d / f"restore-{which}"
            procs, path = tool.restore(i, dest)
            wall = sum(p.wall for p in procs)
            res.checkout_rss = max([res.checkout_rss, *(p.rss for p in procs)])
            setattr(res, f"checkout_{which}", wall)
            good = path.stat().st_size == chain.items[i].size and digest(path) == corpus_digest(
                chain.items[i]
            )
            if not good:
                log(f"    !! {tool.name}: {which} version restored WRONG ({path})")
            ok = ok and good
            cleanup = getattr(tool, "cleanup_restore", None)
            cleanup(dest) if cleanup else rmtree(dest)
            if tool.name == "dvc":
                with contextlib.suppress(FileNotFoundError):
                    (tool.repo / FILE).unlink()  # type: ignore[attr-defined]
        res.verified = ok
    finally:
        close = getattr(tool, "close", None)
        if close:
            close()
        rmtree(d)
    return res


def bench_chains(chains: list[Chain], tools: list[str]) -> dict[str, dict[str, Any]]:
    """{chain: {tool: {"runs": [...], "median": {...}} or {"error": ...}}}."""
    out: dict[str, dict[str, Any]] = {}
    for chain in chains:
        log(
            f"\n== chain {chain.key}: {len(chain.items)} versions, {mb(chain.raw)} MB raw, "
            f"{chain.runs} run(s)"
        )
        results: dict[str, Any] = {t: {"runs": []} for t in tools}
        for r in range(chain.runs):
            order = tools[r % len(tools) :] + tools[: r % len(tools)]  # rotate: share the noise
            for name in order:
                if "error" in results[name]:
                    continue
                try:
                    res = chain_once(chain, TOOLS[name], r)
                except (ToolError, OSError) as e:
                    log(f"  run {r + 1} {name}: ERROR {e}")
                    results[name]["error"] = str(e)
                    continue
                results[name]["runs"].append(res.__dict__)
                log(
                    f"  run {r + 1} {name:8} stored {mb(res.stored):>8} MB "
                    f"({res.stored / chain.raw:.3f})  ingest {res.ingest:6.1f} s  "
                    f"checkout {res.checkout_first:5.1f}/{res.checkout_last:5.1f} s  "
                    f"rss {mb(res.ingest_rss)}/{mb(res.checkout_rss)} MB"
                    f"{'' if res.verified else '  VERIFY FAILED'}"
                )
        for name in tools:
            runs = results[name]["runs"]
            if runs:
                med = {
                    k: statistics.median(x[k] for x in runs)
                    for k, val in runs[0].items()
                    if not isinstance(val, bool | dict)
                }
                med["stored"] = runs[-1]["stored"]  # bytes do not need a median
                med["verified"] = all(r["verified"] for r in runs)
                med["extra"] = runs[0]["extra"]
                results[name]["median"] = med
        out[chain.key] = {
            "title": chain.title,
            "raw": chain.raw,
            "runs": chain.runs,
            "versions": len(chain.items),
            "tools": results,
        }
    return out


# ---------------------------------------------------------------------------------------------
# section 2: single-file compression


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def single_file(item: corpus.Item, repeat: int, tools: list[str]) -> dict[str, Any]:
    """Ratios and MB/s of tvc's codecs, ZipNN and zstd-3 on one file (two threads each)."""
    import zstandard

    from tvc.formats import iter_chunks, parse_file
    from tvc.store import codecs

    path = corpus.CORPUS / item.path
    blob = path.read_bytes()
    mbytes = len(blob) / 1e6
    out: dict[str, Any] = {"file": item.path, "dtype": item.dtype, "bytes": len(blob)}

    if "tvc" in tools:
        specs = list(iter_chunks(blob, parse_file(path)))
        mv = memoryview(blob)

        def enc(s: Any) -> tuple[Any, bytes]:
            return codecs.encode(
                mv[s.offset : s.offset + s.length], dtype=s.dtype, itemsize=s.itemsize
            )

        with ThreadPoolExecutor(2) as pool:
            encoded = list(pool.map(enc, specs))

            def dec() -> list[bytes]:
                return list(
                    pool.map(lambda e, s: codecs.decode(e[0], e[1], s.length), encoded, specs)
                )

            assert b"".join(dec()) == blob, "tvc codecs did not round-trip"
            t_enc = _median_time(lambda: list(pool.map(enc, specs)), repeat)
            t_dec = _median_time(dec, repeat)
        kinds: dict[str, int] = {}
        for k, _ in encoded:
            kinds[k.name] = kinds.get(k.name, 0) + 1
        out["tvc"] = {
            "ratio": sum(len(p) for _, p in encoded) / len(blob),
            "enc_mbs": mbytes / t_enc,
            "dec_mbs": mbytes / t_dec,
            "chunks": len(specs),
            "codecs": kinds,
        }

    if "zipnn" in tools:
        from zipnn import ZipNN

        zn = ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[item.dtype], threads=2)
        frame = zn.compress(bytearray(blob))  # in place: always a copy
        assert bytes(zn.decompress(frame)) == blob, "ZipNN did not round-trip"
        t_enc = _median_time(lambda: zn.compress(bytearray(blob)), repeat)
        t_dec = _median_time(lambda: zn.decompress(frame), repeat)
        out["zipnn"] = {
            "ratio": len(frame) / len(blob),
            "enc_mbs": mbytes / t_enc,
            "dec_mbs": mbytes / t_dec,
        }

    cctx = zstandard.ZstdCompressor(level=3, threads=2)
    dctx = zstandard.ZstdDecompressor()
    frame = cctx.compress(blob)
    assert dctx.decompress(frame) == blob
    t_enc = _median_time(lambda: cctx.compress(blob), repeat)
    t_dec = _median_time(lambda: dctx.decompress(frame), repeat)
    out["zstd-3"] = {
        "ratio": len(frame) / len(blob),
        "enc_mbs": mbytes / t_enc,
        "dec_mbs": mbytes / t_dec,
    }

    if "tvc" in tools:  # the real path: a one-file registry, ratio from `tvc stats`
        d = RUNS_DIR / "single" / item.dtype
        rmtree(d)
        d.mkdir(parents=True)
        try:
            tvc = _tvc_cmd()
            run([*tvc, "init", d / "reg"])
            p = timed([*tvc, "-R", d / "reg", "commit", item.model, path, "-m", "one", "-q"])
            stats = json.loads(run([*tvc, "-R", d / "reg", "stats", "--json"]))
            out["tvc_commit"] = {
                "ratio": stats["stored_bytes"] / stats["logical_bytes"],
                "mbs": mbytes / p.wall,
                "rss": p.rss,
            }
        except ToolError as e:
            out["tvc_commit"] = {"error": str(e)}
        finally:
            rmtree(d)
    return out


def bench_single(items: list[corpus.Item], repeat: int, tools: list[str]) -> list[dict[str, Any]]:
    log(f"\n== single-file compression, median of {repeat}")
    picks = [i for i in items if i.key == "base" and i.dtype in ("FP32", "BF16", "FP16")]
    picks += [i for i in items if i.dtype == "F16-GGUF"]
    results = []
    for item in picks:
        log(f"  {item.path}")
        results.append(single_file(item, repeat, tools))
    return results


# ---------------------------------------------------------------------------------------------
# section 1b: process start-up (every ingest and checkout step above pays it once)


def startup_cmd(name: str) -> list[str | os.PathLike[str]]:
    return {
        "tvc": [*_tvc_cmd(), "--help"],
        # what the long-lived process pays once: the API with its store and codecs loaded
        "tvc-api": [VENV_BIN / "python", "-c", "import tvc.api, tvc.store.codecs"],
        "git-lfs": ["git", "lfs", "version"],
        "dvc": [DVC_BIN, "--version"],
        "borg": ["borg", "--version"],
        "restic": ["restic", "version"],
        "zipnn": [sys.executable, "-c", "import zipnn"],
    }[name]


def bench_startup(tools: list[str], repeat: int) -> dict[str, Any]:
    """Median wall time and RSS of a no-op invocation of each tool."""
    log(f"\n== process start-up, median of {repeat}")
    out: dict[str, Any] = {}
    for name in tools:
        try:
            procs = [timed(startup_cmd(name)) for _ in range(repeat)]
        except ToolError as e:
            out[name] = {"error": str(e)}
            continue
        out[name] = {
            "seconds": statistics.median(p.wall for p in procs),
            "rss": statistics.median(p.rss for p in procs),
            "cmd": " ".join(map(str, startup_cmd(name))).replace(str(ROOT) + "/", ""),
        }
        if name == "tvc":
            out.update(_helper_startup(repeat))
    return out


def _helper_startup(repeat: int) -> dict[str, Any]:
    """`tvc --help` through a running helper, and what starting the helper takes (once)."""
    d = RUNS_DIR / "startup-helper"
    rmtree(d)
    d.mkdir(parents=True)
    tool = Tvc(d)
    tool.rundir.mkdir(mode=0o700)
    env = tool.env()
    out: dict[str, Any] = {}
    try:
        starts = []
        for _ in range(repeat):
            starts.append(timed([*_tvc_cmd(), "daemon", "start"], env=env))
            run([*_tvc_cmd(), "daemon", "stop"], env=env)
        out["tvc helper start (once a session)"] = {
            "seconds": statistics.median(p.wall for p in starts),
            "rss": 0,
            "cmd": "tvc daemon start",
        }
        run([*_tvc_cmd(), "daemon", "start"], env=env)
        procs = [tool.timed([*_tvc_cmd(), "--help"]) for _ in range(repeat)]
        out["tvc (helper running)"] = {
            "seconds": statistics.median(p.wall for p in procs),
            "rss": statistics.median(p.rss for p in procs),
            "cmd": " ".join(map(str, startup_cmd("tvc"))).replace(str(ROOT) + "/", ""),
        }
    except ToolError as e:
        out["tvc (helper running)"] = {"error": str(e)}
    finally:
        tool.close()
        rmtree(d)
    return out


# ---------------------------------------------------------------------------------------------
# section 4: search latency (issue 4)


def bench_search(tools: list[str]) -> dict[str, Any]:
    """Search latency on a registry of 10,000 versions.

    The measuring lives in ``bench/search_bench.py`` (a synthetic 10,000-version registry
    written straight into the metadata DB, each query timed through ``Registry.search``); this
    only calls it and puts its numbers in the report and results.json.
    """
    if "tvc" not in tools:
        return {"skipped": "tvc not selected"}
    try:
        import search_bench
    except ImportError as e:
        return {"skipped": f"bench/search_bench.py cannot be imported ({e})"}
    log(f"\n== search latency, {SEARCH_VERSIONS} versions (bench/search_bench.py)")
    try:
        return search_bench.bench_search(n=SEARCH_VERSIONS, out=sys.stderr)
    except Exception as e:  # another issue's code: report it, keep the rest of the run
        return {"error": f"{type(e).__name__}: {e}"}


# ---------------------------------------------------------------------------------------------
# reporting


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def machine() -> dict[str, Any]:
    mem = 0
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem / 2**30, 1),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(tools: list[str]) -> dict[str, str]:
    import zstandard

    out = {name: TOOLS[name].version() for name in tools}
    out["zstd"] = f"python-zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION})"
    return out


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _med(res: dict[str, Any], chain: str, tool: str) -> dict[str, Any] | None:
    return res["chains"].get(chain, {}).get("tools", {}).get(tool, {}).get("median")


def report(res: dict[str, Any]) -> str:
    out: list[str] = []
    m, v = res["machine"], res["versions"]
    out.append("# tvc bench: tvc against the peers, side by side")
    out.append("")
    out.append(
        f"machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['os']}, "
        f"Python {m['python']}; load average {m['load_avg_start']} at start, "
        f"{m.get('load_avg_end')} at end (shared machine: medians, not absolute claims)"
    )
    out.append("versions: " + "; ".join(f"{k}: {val}" for k, val in v.items()))
    a = res["args"]
    large = "QUICK: no 4 GB pair" if a["quick"] else f"the 4 GB pair: {a['large_runs']} run(s)"
    out.append(f"runs: {a['runs']} (median); {large}")
    out.append("")

    # --- chains
    for key, ch in res["chains"].items():
        out.append(f"## Chain {key}: {ch['title']}")
        out.append(
            f"{ch['versions']} versions, raw {mb(ch['raw'])} MB, median of {ch['runs']} run(s)"
        )
        out.append("")
        rows = []
        for tool, tr in ch["tools"].items():
            med = tr.get("median")
            if med is None:
                rows.append([tool, "ERROR: " + tr.get("error", "no result")[:150]] + [""] * 6)
                continue
            rows.append(
                [
                    tool + ("" if med["verified"] else " (VERIFY FAILED)"),
                    mb(med["stored"]),
                    f"{med['stored'] / ch['raw']:.3f}",
                    f"{med['ingest']:.1f}",
                    f"{ch['raw'] / 1e6 / med['ingest']:.0f}" if med["ingest"] else "-",
                    f"{med['checkout_first']:.2f}",
                    f"{med['checkout_last']:.2f}",
                    f"{mb(med['ingest_rss'])} / {mb(med['checkout_rss'])}",
                ]
            )
        out.append(
            table(
                [
                    "tool",
                    "stored MB",
                    "stored/raw",
                    "ingest s",
                    "ingest MB/s",
                    "checkout first s",
                    "checkout last s",
                    "peak RSS MB ingest / checkout",
                ],
                rows,
            )
        )
        tvc = _med(res, key, "tvc")
        if tvc and tvc.get("extra", {}).get("stats"):
            st = tvc["extra"]["stats"]
            saved = st.get("saved", {})
            fsck = tvc["extra"].get("fsck", {})
            out.append("")
            out.append(
                f"tvc stats: logical {mb(st.get('logical_bytes', 0))} MB, unique "
                f"{mb(st.get('unique_bytes', 0))} MB, stored {mb(st.get('stored_bytes', 0))} MB, "
                f"packs {mb(st.get('pack_bytes', 0))} MB; saved by dedup "
                f"{mb(saved.get('dedup', 0))} MB, delta {mb(saved.get('delta', 0))} MB, "
                f"compression {mb(saved.get('compression', 0))} MB. fsck --read-data: "
                + ("ok" if fsck.get("ok") else f"FAILED {fsck.get('error', '')}"[:200])
                + (f" ({fsck['seconds']} s)" if fsck.get("ok") else "")
            )
        out.append("")

    # --- start-up
    if res.get("startup"):
        out.append("## Process start-up (a no-op invocation; every timed step above pays it)")
        out.append("")
        rows = []
        for name, st in res["startup"].items():
            if "error" in st:
                rows.append([name, "ERROR", st["error"][:100], ""])
            else:
                rss = mb(st["rss"]) if st["rss"] else "-"
                rows.append([name, f"{st['seconds']:.2f}", rss, f"`{st['cmd']}`"])
        out.append(table(["tool", "start s", "RSS MB", "command"], rows))
        out.append("")

    if res.get("cold_start"):
        out += small_bench.report_cold_start(res["cold_start"])
    if res.get("small_files"):
        out += small_bench.report_small_files(res["small_files"])

    # --- single file
    if res.get("single"):
        out.append("## Single-file compression (ratio = compressed / original, lower is better)")
        out.append(
            "tvc: its chunk codecs on the chunks its format layer cuts; ZipNN and zstd-3: "
            "the whole file. Two threads each. MB/s of original bytes. "
            "'tvc commit' = a real one-file registry (`tvc stats`)."
        )
        out.append("")
        rows = []
        for s in res["single"]:
            t, z, zs = s.get("tvc", {}), s.get("zipnn", {}), s["zstd-3"]
            tc = s.get("tvc_commit", {})

            def f(d: dict, k: str, fmt: str = "{:.4f}") -> str:
                return fmt.format(d[k]) if k in d else "-"

            rows.append(
                [
                    f"{s['dtype']} ({s['file']})",
                    mb(s["bytes"]),
                    f(t, "ratio"),
                    f(z, "ratio"),
                    f(zs, "ratio"),
                    f"{t['ratio'] - z['ratio']:+.4f}" if t and z else "-",
                    f"{f(t, 'enc_mbs', '{:.0f}')} / {f(z, 'enc_mbs', '{:.0f}')} / "
                    f"{f(zs, 'enc_mbs', '{:.0f}')}",
                    f"{f(t, 'dec_mbs', '{:.0f}')} / {f(z, 'dec_mbs', '{:.0f}')} / "
                    f"{f(zs, 'dec_mbs', '{:.0f}')}",
                    f(tc, "ratio") if "ratio" in tc else ("ERROR" if tc else "-"),
                ]
            )
        out.append(
            table(
                [
                    "file",
                    "MB",
                    "tvc",
                    "ZipNN",
                    "zstd-3",
                    "tvc − ZipNN",
                    "enc MB/s tvc / ZipNN / zstd",
                    "dec MB/s tvc / ZipNN / zstd",
                    "tvc commit",
                ],
                rows,
            )
        )
        out.append("")

    # --- ratios
    peers = [p for p in PEERS if p in res["args"]["tools"]]
    rows = []
    for key in res["chains"]:
        for who in ("tvc", "tvc-api"):
            tvc = _med(res, key, who)
            if not tvc:
                continue
            for metric, label in (
                ("stored", "stored bytes"),
                ("ingest", "ingest time"),
                ("checkout_first", "checkout first"),
                ("checkout_last", "checkout last"),
                ("ingest_rss", "peak RSS ingest"),
            ):
                if who != "tvc" and metric == "stored":
                    continue  # the same store either way
                row = [key, label + (" (API)" if who != "tvc" else "")]
                for peer in peers:
                    pm = _med(res, key, peer)
                    row.append(f"{tvc[metric] / pm[metric]:.2f}" if pm and pm[metric] else "-")
                rows.append(row)
    if rows:
        out.append(
            "## tvc ÷ peer (below 1: tvc is smaller / faster; (API): the tvc-api row, one "
            "long-lived process)"
        )
        out.append("")
        out.append(table(["chain", "metric", *(f"÷ {p}" for p in peers)], rows))
        out.append("")

    # --- targets
    out.append("## Issue 3 targets")
    out.append("")
    out.append(table(["target", "measured", "goal", "met"], targets(res)))
    out.append("")

    out.append("## Search latency (issue 4)")
    out.append("")
    out.append(search_report(res["search"]))
    out += ["", "### alias set and rollback while another model's multi-GB commit runs", ""]
    out.append(locks_report(res.get("locks", {"skipped": "not run"})))
    out += ["", "## Remotes: push, pull, clone (issue 13)", ""]
    out += remote_report(res.get("remote", {"skipped": "not run"}))
    out += ["", "## Web UI render times (issue 17, bench/ui_bench.py)", ""]
    out.append(ui_report(res.get("ui", {"skipped": "not run"})))
    return "\n".join(out)


def bench_remote(size_mb: int, runs: int, tools: list[str]) -> dict[str, Any]:
    """tvc / DVC / git-lfs remotes on a generated pair (``bench/remote_bench.py``)."""
    chosen = [t for t in remote_bench.TOOLS if t in tools]
    if size_mb <= 0 or not chosen:
        return {"skipped": "--remote-size-mb 0" if size_mb <= 0 else "no remote tool selected"}
    log(f"\n== remotes: {size_mb} MB pair, {', '.join(chosen)} (bench/remote_bench.py)")
    try:
        return remote_bench.bench_remote(size_mb, runs=runs, tools=chosen, log=log)
    except Exception as e:  # report it, keep the rest of the run
        return {"error": f"{type(e).__name__}: {e}"}


def remote_report(rr: dict[str, Any]) -> list[str]:
    if "skipped" in rr or "error" in rr:
        return [rr.get("skipped") or f"ERROR: {rr['error']}"]
    return remote_bench.report(rr)


def bench_ui(tools: list[str]) -> dict[str, Any]:
    """The web UI's 5,000-version model page and 2,000-tensor version page
    (``bench/ui_bench.py``)."""
    if "tvc" not in tools:
        return {"skipped": "tvc not selected"}
    try:
        import ui_bench

        log("\n== web UI pages (bench/ui_bench.py)")
        return ui_bench.bench_ui()
    except Exception as e:  # another issue's code: report it, keep the rest of the run
        return {"error": f"{type(e).__name__}: {e}"}


def ui_report(res: dict[str, Any]) -> str:
    import ui_bench

    return ui_bench.report(res)


def bench_locks(items: list[corpus.Item], tools: list[str]) -> dict[str, Any]:
    """Latency of `tvc alias set` / `tvc rollback` (cold processes) idle and during a commit
    of the largest corpus file (``bench/locks_bench.py``)."""
    if "tvc" not in tools:
        return {"skipped": "tvc not selected"}
    import locks_bench

    big = max(items, key=lambda i: i.size)
    # Moves are sampled from 1 s into the commit on, 7 pairs of cold processes (≈ 4 s) after
    # the API's: a commit that ends sooner (the --quick corpus's largest file is 91 MB: 1 s)
    # leaves few or none, so the bench then writes its own 3 GB file (≈ 7 s here).
    file = corpus.CORPUS / big.path if big.size >= 2e9 else None
    size = big.size if file is not None else 3e9
    log(f"\n== alias set / rollback during a commit of {mb(size)} MB (bench/locks_bench.py)")
    try:
        return locks_bench.bench_locks(file, gb=size / 1e9, repeat=7)
    except Exception as e:  # report it, keep the rest of the run
        return {"error": f"{type(e).__name__}: {e}"}


def locks_report(lk: dict[str, Any]) -> str:
    if "skipped" in lk or "error" in lk:
        return lk.get("skipped") or f"ERROR: {lk['error']}"
    rows = [
        [op, f"{lk[f'{op} idle']:.3f}", f"{lk.get(f'{op} during commit', float('nan')):.3f}"]
        for op in ("alias set", "rollback", "api alias set", "api rollback")
    ]
    head = (
        f"cold `tvc` processes and the API in one process, median s; the other commit: "
        f"{mb(lk['file_bytes'])} MB in "
        f"{lk['commit_seconds']:.1f} s, {lk['samples_during_commit']} samples during it"
    )
    return "\n".join([head, "", table(["command", "idle", "during the commit"], rows)])


def search_report(sr: dict[str, Any]) -> str:
    if "skipped" in sr:
        return f"skipped: {sr['skipped']}"
    if "error" in sr:
        return f"ERROR: {sr['error']}"
    rows = [
        [
            f"`{q['query'] or '(all)'}`",
            str(q.get("order_by") or ""),
            str(q.get("limit") or ""),
            str(q["results"]),
            f"{q['median_ms']:.1f}",
        ]
        for q in sr.get("queries", [])
    ]
    worst = sr.get("median_ms", 0)
    head = f"{sr.get('versions')} versions, `Registry.search` (in-process), median per query"
    ok = "✓" if worst < 100 else "✗"
    foot = f"slowest median {worst:.1f} ms (issue 4 target < 100 ms): {ok}"
    cols = ["query", "order by", "limit", "results", "median ms"]
    return "\n".join([head, "", table(cols, rows), "", foot])


def targets(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(name: str, value: float | None, goal: float, fmt: str, unit: str = "") -> None:
        if value is None:
            rows.append([name, "n/a", f"≤ {goal:{fmt}}{unit}", "-"])
        else:
            ok = "✓" if value <= goal else "✗"
            rows.append([name, f"{value:{fmt}}{unit}", f"≤ {goal:{fmt}}{unit}", ok])

    chains = res["chains"]
    for key, goal in (("fp32", 0.40), ("bf16", 0.20)):
        tvc = _med(res, key, "tvc")
        add(
            f"{key} chain stored/raw",
            tvc["stored"] / chains[key]["raw"] if tvc else None,
            goal,
            ".3f",
        )
    for key in chains:
        tvc, borg = _med(res, key, "tvc"), _med(res, key, "borg")
        both = tvc is not None and borg is not None
        add(
            f"{key}: tvc stored ÷ borg",
            tvc["stored"] / borg["stored"] if both else None,
            0.6,
            ".2f",
            "×",
        )
        for who, label in (("tvc", "tvc"), ("tvc-api", "tvc API")):
            t = _med(res, key, who)
            if t is None and who != "tvc":
                continue
            ok = t is not None and borg is not None
            add(
                f"{key}: {label} ingest ÷ borg",
                t["ingest"] / borg["ingest"] if ok else None,
                0.5,
                ".2f",
                "×",
            )
            for which in ("first", "last"):
                k = f"checkout_{which}"
                add(
                    f"{key}: {label} checkout {which} ÷ borg extract",
                    t[k] / borg[k] if ok and borg[k] else None,
                    1.0,
                    ".2f",
                    "×",
                )
    large = _med(res, "large", "tvc")
    if large:
        peak = max(large["ingest_rss"], large["checkout_rss"]) / 2**30
        add("large: tvc peak RSS (commit, checkout)", peak, 1.0, ".2f", " GiB")
    for s in res.get("single", []):
        t, z = s.get("tvc"), s.get("zipnn")
        add(
            f"single {s['dtype']}: tvc ratio − ZipNN ratio",
            t["ratio"] - z["ratio"] if t and z else None,
            0.005,
            "+.4f",
        )
    return rows


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per chain; medians (default 3)")
    ap.add_argument("--large-runs", type=int, default=1, help="runs of the 4 GB pair (default 1)")
    ap.add_argument("--quick", action="store_true", help="no 4 GB pair, one run")
    ap.add_argument("--no-large", action="store_true", help="no 4 GB pair")
    ap.add_argument("--only", default=",".join(ALL_TOOLS), help="tools, e.g. tvc,borg")
    ap.add_argument("--no-single", action="store_true", help="skip single-file compression")
    ap.add_argument(
        "--small-files", type=int, default=100_000, help="N x 1 KB section (0: skip; default 1e5)"
    )
    ap.add_argument(
        "--remote-size-mb",
        type=int,
        default=None,
        help="size of the remotes section's model (0: skip; default 1000, --quick 200)",
    )
    ap.add_argument(
        "--remote-runs", type=int, default=1, help="runs of the remotes section (default 1)"
    )
    ap.add_argument(
        "--zipnn-worker", nargs=4, metavar=("OP", "DTYPE", "SRC", "DST"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.zipnn_worker:
        zipnn_worker(*args.zipnn_worker)
        return
    tools = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(tools) - set(ALL_TOOLS)
    if unknown:
        ap.error(f"unknown tool(s) {sorted(unknown)}; choose from {','.join(ALL_TOOLS)}")
    if args.quick:
        args.runs = 1
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit("bench: needs GNU time at /usr/bin/time (run bench/setup.sh)")
    if "dvc" in tools and not DVC_BIN.exists():
        sys.exit(f"bench: no DVC at {DVC_BIN} (run bench/setup.sh)")
    WORK.mkdir(exist_ok=True)

    res: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(tools),
        "args": vars(args) | {"tools": tools},
    }
    log(f"machine: {res['machine']}")
    for k, val in res["versions"].items():
        log(f"  {k}: {val}")

    started, t0 = time.time(), time.perf_counter()
    large = not (args.quick or args.no_large)
    items = corpus.build(large=large, log=log)
    log(f"corpus ready ({time.perf_counter() - t0:.0f} s)")
    chains = [
        Chain(
            "fp32",
            "FP32 safetensors: base → 3 checkpoints of one full fine-tune (one model), "
            "then 3 fine-tunes of the base (own models, --base)",
            [i for i in items if i.dtype == "FP32" and i.model != "large"],
            args.runs,
        ),
        Chain(
            "bf16", "the same versions in BF16", [i for i in items if i.dtype == "BF16"], args.runs
        ),
    ]
    if large:
        chains.append(
            Chain(
                "large",
                "4.5 GB FP32 pair: v1, v2 with ~16 % of tensors fine-tuned",
                [i for i in items if i.model == "large"],
                args.large_runs,
            )
        )
    free = shutil.disk_usage(WORK).free
    need = 3 * max(c.raw for c in chains)
    if free < need:
        log(f"WARNING: {mb(free)} MB free under {WORK}; the largest chain may need {mb(need)} MB")

    res["corpus"] = [i.__dict__ for i in items]
    res["chains"] = bench_chains(chains, tools)
    res["startup"] = bench_startup(tools, 5)
    if "tvc" in tools:
        res["cold_start"] = small_bench.bench_cold_start(11, log=log)
        if args.small_files:
            res["small_files"] = small_bench.bench_small_files(args.small_files, log=log)
    res["single"] = [] if args.no_single else bench_single(items, max(args.runs, 3), tools)
    res["search"] = bench_search(tools)
    res["locks"] = bench_locks(items, tools)
    remote_mb = args.remote_size_mb
    if remote_mb is None:
        remote_mb = 200 if args.quick else 1000
    res["remote"] = bench_remote(remote_mb, args.remote_runs, tools)
    res["ui"] = bench_ui(tools)
    res["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["targets"] = targets(res)
    text = report(res)
    res["report"] = text
    blob = json.dumps(res, indent=1, default=str)
    RESULTS.write_text(blob)  # the latest run; every run is also kept under its start time
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    (WORK / f"results-{stamp}{'-quick' if args.quick else ''}.json").write_text(blob)
    print(text)
    # The sections of the server-side issues: standalone scripts, each printing its own table
    # (the HF endpoint, tvc serve, the scale-out cluster of SeaweedFS + PostgreSQL + replicas).
    for script in ("hf_bench.py", "serve_bench.py", "scale_bench.py"):
        log(f"\n== bench/{script}")
        subprocess.run([sys.executable, str(HERE / script)], check=False)
    log(f"\nresults: {RESULTS} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
