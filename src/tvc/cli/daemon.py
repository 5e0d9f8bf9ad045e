"""The resident helper: import tvc once, fork a fresh child for every ``tvc`` command.

Started in the background by :mod:`tvc.cli.launcher` (``python -P -m tvc.cli.daemon BASE``)
with ``BASE`` = ``<runtime dir>/<helper key>``. It holds ``BASE.lock`` for its whole life (one
helper per key), listens on ``BASE.sock`` and describes itself in ``BASE.json``.

The helper itself never runs a command, opens a registry or starts a thread of its own: each
command runs in a child forked from the pristine, fully imported process, and a crash or a leak
dies with its child. The helper's loop is single-threaded and never blocks on a client: accept,
read requests as they arrive, hand over or fork, watch for clients that leave, reap, report the
exit status. The child becomes the caller's process as far as a forked one can (:func:`_become`)
and reports its own exit code too, so a client outlives a helper that dies under it.

One *spare* child waits, already warmed up: it ran a few read commands on a private registry
(``BASE.warm``) with their output discarded. A fresh fork pays for every page it touches
(copy-on-write: ≈ 3,000 page faults for a ``tvc log``) and for first-use work in the libraries;
the spare paid both before the command came. Measured here: ``log`` 19 → 8 ms and a small
``commit`` 45 → 27 ms inside the child. The next command goes to the spare once it has said it is
ready; a command that comes earlier gets a fresh fork as before. A new spare is forked as soon as
the last one is taken, so it warms up while that command runs: commands issued back to back (a
script, a training loop) each find a ready spare. Its warm-up (≈ 0.12 s of one core) mostly fills
the core the command leaves idle; on the bench's FP32 chain of 7 commits it took the commits that
found a spare from about half to all, and the chain from 2.2-2.5 s to 1.9-2.3 s.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import gc
import io
import json
import locale
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable

from tvc.cli import launcher

_RECHECK = 30.0  # seconds between checks that the code on disk is still the code loaded
# A client that connected but has not sent its whole request waits in ``pending`` without
# holding up anyone else; it is dropped after this long, or when too many wait.
_PENDING_TIMEOUT = 60.0
_MAX_PENDING = 64


def _preload() -> None:
    """Import every module a command may need, so no child pays for an import."""
    import importlib
    import pkgutil

    import tvc

    skip = ("tvc.__main__", "tvc.cli.daemon", "tvc.repo.migrations")
    for mod in pkgutil.walk_packages(tvc.__path__, "tvc."):
        if not mod.name.startswith(skip):
            importlib.import_module(mod.name)
    lazy = (
        "alembic.command",
        "alembic.config",
        "gguf",
        "rich._emoji_codes",
        "rich.progress",
        "rich.table",
        "sqlalchemy.dialects.sqlite",
        "sqlite3",
    )
    for name in lazy:  # what commands import on first use (found by diffing sys.modules)
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


_SPARE_TRIES = 3  # spares that may die unused before the helper stops making them


class _Pending:
    """A request on its way in: bytes and stdio fds received so far."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.buf = bytearray()
        self.fds: list[int] = []


class Helper:
    def __init__(
        self, base: str, listener: socket.socket, idle: float, fingerprint: str, lock_fd: int
    ) -> None:
        self.base = base
        self.listener = listener
        self.lock_fd = lock_fd
        self.idle = idle
        self.fingerprint = fingerprint  # of the code on disk before it was imported
        self.children: dict[int, socket.socket] = {}
        self.spare: tuple[int, socket.socket] | None = None  # (pid, channel to it)
        self.spare_ready = False  # it said so: its warm-up is over
        self.spare_deaths = 0
        self.spare_ran: set[int] = set()  # children that were the spare (for the report)
        self.inbox: dict[socket.socket, bytes] = {}  # partial frames from clients
        self.pending: dict[socket.socket, _Pending] = {}  # requests still arriving
        self.cgroup = _cgroup()
        self.stopping = False
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def loop(self) -> None:
        last_used = checked = time.monotonic()
        while True:
            if self.stopping:
                self._close_listener()
                self._drop_spare()
                if not self.children:
                    return
            elif self.spare is None and self.spare_deaths < _SPARE_TRIES:
                self._fork_spare()
            now = time.monotonic()
            wait = _RECHECK if self.children else max(0.0, self.idle - (now - last_used))
            if self.pending:
                oldest = min(p.since for p in self.pending.values())
                wait = min(wait, max(0.0, oldest + _PENDING_TIMEOUT - now))
            for key, _ in self.sel.select(min(wait, _RECHECK)):
                if key.fileobj is self.listener and not self.stopping:
                    self._accept()
                elif key.fileobj in self.pending:
                    self._from_pending(key.fileobj)
                elif self.spare is not None and key.fileobj is self.spare[1]:
                    self._from_spare()
                elif key.fileobj == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                elif isinstance(key.fileobj, socket.socket):
                    self._from_client(key.fileobj)
            self._reap()
            now = time.monotonic()
            for conn, p in list(self.pending.items()):
                if now - p.since >= _PENDING_TIMEOUT or self.stopping:
                    self._drop_pending(conn)
            if self.children:
                last_used = now
            elif now - last_used >= self.idle:
                self.stopping = True
            if now - checked >= _RECHECK:
                checked = now
                if launcher.code_fingerprint(sys.path) != self.fingerprint:
                    self.stopping = True

    def _close_listener(self) -> None:
        if self.listener.fileno() >= 0:
            self.sel.unregister(self.listener)
            self.listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.base + ".sock")

    def _accept(self) -> None:
        """Take a connection and return at once: its request is read as it arrives
        (:meth:`_from_pending`), so a client that connects and says nothing holds up nobody."""
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", creds)[1] != os.getuid():
                conn.close()  # only this user may run commands as this user
                return
            conn.setblocking(False)
            self.sel.register(conn, selectors.EVENT_READ)
        except (OSError, ValueError):
            conn.close()
            return
        self.pending[conn] = _Pending(time.monotonic())
        while len(self.pending) > _MAX_PENDING:
            self._drop_pending(min(self.pending, key=lambda c: self.pending[c].since))

    def _drop_pending(self, conn: socket.socket) -> None:
        p = self.pending.pop(conn)
        for fd in p.fds:
            os.close(fd)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn)
        conn.close()

    def _from_pending(self, conn: socket.socket) -> None:
        """More of a request: the header with the client's three stdio fds, then its body."""
        p = self.pending[conn]
        try:
            data, ancdata, _flags, _ = conn.recvmsg(
                1 << 16, socket.CMSG_SPACE(4 * struct.calcsize("i")), socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        except OSError:
            data, ancdata = b"", []
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                p.fds.extend(fds)
        p.buf += data
        head = launcher._HEADER.size
        if not data or len(p.fds) > 3:  # gone, or not a tvc client
            self._drop_pending(conn)
            return
        if len(p.buf) < head:
            return
        protocol, size = launcher._HEADER.unpack_from(p.buf)
        if protocol != launcher.PROTOCOL or size > launcher.MAX_FRAME or len(p.fds) != 3:
            self._drop_pending(conn)
            return
        if len(p.buf) < head + size:
            return
        if len(p.buf) > head + size:  # nothing may follow a request before its answer
            self._drop_pending(conn)
            return
        fds, payload = p.fds, bytes(p.buf[head:])
        p.fds = []
        self.pending.pop(conn)
        self.sel.unregister(conn)
        self._start(conn, fds, payload)

    def _start(self, conn: socket.socket, fds: list[int], payload: bytes) -> None:
        """Hand a complete request to the spare or a fresh fork, or refuse it by hanging up
        (the client then runs the command itself)."""
        try:
            request = _checked(launcher.load(payload))
            if launcher.code_fingerprint(sys.path) != self.fingerprint:
                self.stopping = True  # stale: the client runs the command itself
                return
            if _unlike(request, self.cgroup) is not None:
                return  # another cgroup, or limits this process cannot take: run cold
            conn.setblocking(True)  # the child writes to it; the helper only when readable
            pid = self._hand_to_spare(conn, fds, payload)
            if pid is not None:
                self.spare_ran.add(pid)
            else:
                pid = os.fork()
                if pid == 0:
                    self._child(conn, fds, request)  # never returns
            self.children[pid] = conn
            self.sel.register(conn, selectors.EVENT_READ)
            conn = None  # kept
        except (OSError, ValueError):
            return
        finally:
            for fd in fds:
                os.close(fd)
            if conn is not None:
                conn.close()

    def _from_client(self, conn: socket.socket) -> None:
        """A signal to forward, or EOF: the client is gone, so its command must stop too."""
        pid = next((p for p, c in self.children.items() if c is conn), None)
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if pid is None:
            return
        if not data:
            self.inbox.pop(conn, None)
            self.sel.unregister(conn)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            return
        self.inbox[conn] = buf = self.inbox.get(conn, b"") + data
        while len(buf) >= launcher._FRAME.size:
            (size,) = launcher._FRAME.unpack_from(buf)
            end = launcher._FRAME.size + size
            if size > 1024:  # a signal message is a few bytes: this client is broken
                buf = b""
                break
            if len(buf) < end:
                break
            with contextlib.suppress(ValueError, ProcessLookupError):
                sig = launcher.load(buf[launcher._FRAME.size : end]).get("signal")
                if sig in _ALLOWED_SIGNALS:
                    os.kill(pid, sig)
            buf = buf[end:]
        self.inbox[conn] = buf

    def _reap(self) -> None:
        while True:  # commands, the spare, and spares that failed a hand-over
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare[0]:  # died unused
                self._forget_spare()
                self.spare_deaths += 1
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            report = {
                "exit": code if code >= 0 else 128 - code,
                "signal": -code if code < 0 else 0,
                "maxrss": usage.ru_maxrss * 1024,
                "utime": usage.ru_utime,
                "stime": usage.ru_stime,
                "minflt": usage.ru_minflt,
                "spare": pid in self.spare_ran,  # its usage then includes the warm-up
            }
            self.spare_ran.discard(pid)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn)
            self.inbox.pop(conn, None)
            with contextlib.suppress(OSError):
                conn.settimeout(1.0)  # the child has ended: its end no longer shares the flag
                conn.sendall(launcher.frame(report))
            conn.close()

    # -- the spare --------------------------------------------------------------------------
    def _fork_spare(self) -> None:
        mine, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError:
            mine.close()
            theirs.close()
            self.spare_deaths += 1
            return
        if pid == 0:
            mine.close()
            self._spare(theirs)  # never returns
        theirs.close()
        mine.setblocking(False)
        self.spare, self.spare_ready = (pid, mine), False
        self.sel.register(mine, selectors.EVENT_READ)

    def _from_spare(self) -> None:
        """The spare's one message, "ready", or EOF: it died (and is reaped as a child)."""
        assert self.spare is not None
        try:
            said = self.spare[1].recv(16)
        except BlockingIOError:
            return  # not yet
        except OSError:
            said = b""
        if said:
            self.spare_ready = True
        else:
            self._forget_spare()
            self.spare_deaths += 1

    def _forget_spare(self) -> tuple[int, socket.socket]:
        assert self.spare is not None
        (pid, chan), self.spare = self.spare, None
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(chan)
        chan.close()
        return pid, chan

    def _hand_to_spare(self, conn: socket.socket, fds: list[int], payload: bytes) -> int | None:
        """Pass the client's socket, stdio and request to the spare; its pid, or None.

        Only to a spare that said it is ready: one still warming up (or stuck) is left alone,
        and the command gets a fresh fork, as if there were no spare.
        """
        if self.spare is not None and not self.spare_ready:
            self._from_spare()  # a "ready" sent since the last look
        if self.spare is None or not self.spare_ready:
            return None
        pid, chan = self.spare
        try:
            chan.settimeout(5.0)  # it is waiting for exactly this
            socket.send_fds(chan, [launcher._FRAME.pack(len(payload))], [conn.fileno(), *fds])
            chan.sendall(payload)
        except OSError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.spare_deaths += 1
            return None  # reaped as an unknown child; this command gets a fresh fork
        finally:
            self._forget_spare()
        return pid

    def _drop_spare(self) -> None:
        if self.spare is not None:
            pid, _chan = self._forget_spare()  # it sees EOF and exits, if it is waiting
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spare(self, chan: socket.socket) -> None:
        """In the spare: warm up, wait for one command, run it as :meth:`_child` does."""
        try:
            self._leave_parent()
            _warm_up(self.base + ".warm")
            chan.sendall(b"ready")
            os.chdir("/")  # at / once it said so (tests tell by that)
            head, fds, _, _ = socket.recv_fds(chan, launcher._FRAME.size, 4)
            if len(head) != launcher._FRAME.size or len(fds) != 4:
                os._exit(0)  # the helper is stopping
            (size,) = launcher._FRAME.unpack(head)
            payload = _recv_exactly(chan, size)
            if payload is None:
                os._exit(0)
            chan.close()
            request = launcher.load(payload)
            conn = socket.socket(fileno=fds[0])
        except BaseException:
            os._exit(1)
        self._run(conn, fds[1:], request)

    # -- a command's child ------------------------------------------------------------------
    def _leave_parent(self) -> None:
        """Drop what belongs to the helper: its signal handlers, sockets and lock."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.sel.close()
        self.listener.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.close(self.lock_fd)
        for other in self.children.values():
            other.close()
        for other, pending in self.pending.items():
            other.close()
            for fd in pending.fds:
                os.close(fd)
        if self.spare is not None:
            self.spare[1].close()

    def _child(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        """In a freshly forked child: leave the helper, then run the command."""
        try:
            self._leave_parent()
        except BaseException:
            os._exit(1)
        self._run(conn, fds, request)

    def _run(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        """Become the client's process, run the command, report its exit code, exit.

        The child keeps its own end of the client's connection and writes its exit code there
        just before it exits: if the helper is killed meanwhile, the client still learns how
        the command ended instead of reporting a failure for a command that succeeded.
        """
        code = 1
        started = False
        try:
            os.set_inheritable(conn.fileno(), False)  # no command's subprocess holds it open
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            fds.clear()
            try:
                _become(request)
            except (OSError, ValueError) as exc:  # its directory is gone, a limit refused:
                # nothing ran, so the client runs the command itself
                with contextlib.suppress(OSError):
                    conn.sendall(launcher.frame({"refused": str(exc)}))
                os._exit(1)
            conn.sendall(launcher.frame({"pid": os.getpid()}))
            started = True
            from tvc.cli.main import main

            code = main(list(request["argv"]))
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                    stream.flush()
        except KeyboardInterrupt:  # Ctrl-C before the command started
            code = 130
        except BaseException:  # report anything, then leave the child
            with contextlib.suppress(BaseException):
                sys.stderr.write("tvc: internal error in the tvc helper (TVC_DAEMON=0 avoids it)\n")
                if os.environ.get("TVC_DEBUG"):
                    sys.stderr.write(traceback.format_exc())
                sys.stderr.flush()
        finally:
            if started:
                with contextlib.suppress(BaseException):
                    conn.sendall(launcher.frame({"exit": code, "by": "child"}))
            os._exit(code)


_ALLOWED_SIGNALS = frozenset(
    {
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGSTOP,
        signal.SIGCONT,
    }
)


def _checked(request: dict) -> dict:
    """The request's fields with the types the child relies on, or ValueError."""
    argv, cwd, env = request.get("argv"), request.get("cwd"), request.get("env")
    streams = request.get("streams")
    if not (
        isinstance(argv, list)
        and all(isinstance(a, str) for a in argv)
        and isinstance(cwd, str)
        and isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        and isinstance(request.get("umask"), int)
        and isinstance(streams, list)
        and len(streams) == 3
        and all(isinstance(x, list) and len(x) == 2 for x in streams)
        and isinstance(request.get("cgroup"), str)
        and isinstance(request.get("rlimits"), dict)
        and all(
            isinstance(k, str)
            and k.startswith("RLIMIT_")
            and isinstance(v, tuple)
            and len(v) == 2
            and all(isinstance(x, int) for x in v)
            for k, v in request["rlimits"].items()
        )
        and isinstance(request.get("nice"), int)
        and isinstance(request.get("ignored"), list)
        and all(isinstance(x, int) for x in request["ignored"])
        and isinstance(request.get("sigmask"), list)
        and all(isinstance(x, int) for x in request["sigmask"])
    ):
        raise ValueError("malformed request")
    return request


def _cgroup() -> str:
    try:
        with open("/proc/self/cgroup") as f:
            return f.read()
    except OSError:
        return ""


def _le(a: int, b: int) -> bool:
    """Resource limit ``a`` at most ``b`` (RLIM_INFINITY is the largest)."""
    inf = resource.RLIM_INFINITY
    return b == inf or (a != inf and a <= b)


def _unlike(request: dict, cgroup: str) -> str | None:
    """Why a child of this helper could not be the client's process, or None.

    A forked child stays in the helper's cgroup and can only lower its limits and raise its
    nice value: a client in another cgroup (another SLURM job, systemd unit or session), with
    a higher hard limit or a lower nice value runs its command itself.
    """
    if request["cgroup"] != cgroup:
        return "another cgroup"
    for name, (_soft, hard) in request["rlimits"].items():
        which = getattr(resource, name, None)
        if which is None or not _le(hard, resource.getrlimit(which)[1]):
            return f"{name} above the helper's"
    if request["nice"] < os.getpriority(os.PRIO_PROCESS, 0):
        return "a lower nice value than the helper's"
    return None


def _become(request: dict) -> None:
    """Take on the client's working directory, environment, time zone, locale, umask, limits,
    nice value, signal dispositions and mask, and stdio encodings."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()  # TZ: a cold process reads it at start
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")
    os.umask(int(request["umask"]))
    for name, limits in request["rlimits"].items():
        which = getattr(resource, name)
        if resource.getrlimit(which) != tuple(limits):
            resource.setrlimit(which, tuple(limits))
    if request["nice"] != os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
    ignored = set(request["ignored"])
    for sig in launcher._INHERITED:
        if int(sig) in ignored:
            signal.signal(sig, signal.SIG_IGN)
        elif sig == signal.SIGINT:
            signal.signal(sig, signal.default_int_handler)
        else:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, request["sigmask"])
    (in_enc, in_err), (out_enc, out_err), (err_enc, err_err) = request["streams"]
    sys.stdin = sys.__stdin__ = _text(0, in_enc, in_err, line=False)
    sys.stdout = sys.__stdout__ = _text(1, out_enc, out_err, line=os.isatty(1))
    sys.stderr = sys.__stderr__ = _text(2, err_enc, err_err or "backslashreplace", line=True)
    sys.argv = ["tvc", *request["argv"]]
    from tvc.cli import common

    common.reset_consoles()


# Read-only commands on the private registry. What they touch (Click, Rich's tables, SQLAlchemy's
# statement compilation, the safetensors layout, the chunk reader and float decoder) becomes the
# spare's own memory before a command needs it. Measured in the child: ``log`` alone takes a
# commit from 48-62 to 34-40 ms and a checkout from 23-31 to 8-11 ms, for ≈ 22 ms of warm-up;
# ``cat`` adds ≈ 12 ms for 3-8 ms more. Rendering the top-level help (45 ms) is not worth it.
_WARM_UP = (["log", "warm"], ["cat", "warm@v1", "w.safetensors"])


def _warm_up(path: str) -> None:
    """Run ``_WARM_UP`` in ``path`` (made on first use), output discarded; best effort."""
    from tvc.cli import common
    from tvc.cli.main import main

    saved_env = dict(os.environ)
    saved_streams = sys.stdout, sys.stderr
    null = open(os.devnull, "w")  # noqa: SIM115 - closed below, after the consoles let go
    try:
        for name in [n for n in os.environ if n.startswith("TVC_")]:
            del os.environ[name]
        sys.stdout = sys.stderr = null
        common.reset_consoles()
        os.chdir(os.path.dirname(path))
        if not os.path.isdir(path):
            _make_warm_registry(path, main)
        os.chdir(path)
        for argv in _WARM_UP:
            main(list(argv))
    except Exception:
        pass  # a colder command, nothing worse
    finally:
        os.chdir(os.path.dirname(path))
        os.environ.clear()
        os.environ.update(saved_env)
        sys.stdout, sys.stderr = saved_streams
        common.reset_consoles()
        common.state.registry_path, common.state.quiet = None, False
        null.close()
    gc.collect()
    gc.freeze()


def _make_warm_registry(path: str, main: Callable[[list[str]], int]) -> None:
    """A registry with one small version of one safetensors file, made aside and renamed in."""
    tmp = f"{path}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    from tvc.formats.safetensors import encode_header

    tensors = {"w": ("F32", [64, 64], 4 * 64 * 64), "b": ("BF16", [256], 2 * 256)}
    header, offset = {}, 0
    for name, (dtype, shape, size) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    data = bytes(range(256)) * (offset // 256)
    try:
        if main(["init", tmp]) != 0:
            return
        with open(os.path.join(tmp, "w.safetensors"), "wb") as f:
            f.write(encode_header(header) + data)
        if main(["-R", tmp, "commit", "warm", os.path.join(tmp, "w.safetensors"), "-m", "warm"]):
            return
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from ``sock``, or None if it closes first."""
    buf = bytearray()
    while len(buf) < size:
        part = sock.recv(min(1 << 20, size - len(buf)))
        if not part:
            return None
        buf += part
    return bytes(buf)


def _text(fd: int, encoding: str | None, errors: str | None, *, line: bool) -> io.TextIOWrapper:
    """A text stream on ``fd`` as Python makes its own stdio (the fd stays open on close)."""
    raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
    buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, line_buffering=line)


def _publish(path: str, text: str) -> None:
    """Write a runtime file whole (temp file, then rename): clients never read half of one.

    Not :mod:`tvc.store.durable`: these files need no fsync (they describe a running process),
    and ``.failed`` is written when importing tvc itself may be what failed.
    """
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def serve(base: str) -> None:
    """Become the helper for ``base`` unless another process already is."""
    lock_fd = os.open(base + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return
    # Who holds the lock, for `tvc daemon stop`: a helper that was killed leaves its .json.
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, str(os.getpid()).encode())
    listener = None
    try:
        # Taken before importing: code that changes meanwhile fails the first check.
        fingerprint = launcher.code_fingerprint(sys.path)
        try:
            _preload()
            from tvc.cli.main import _keep_freed_buffers, command

            command().build_all()  # every Click command, built once for every child
        except Exception:
            # Say why, and keep clients from starting a helper that fails again with every
            # command: they see this file and run cold until the code changes (another key)
            # or `tvc daemon stop` clears it.
            _publish(base + ".failed", traceback.format_exc())
            return
        _keep_freed_buffers()
        # What is loaded now stays: children's collections skip it and leave its pages shared.
        gc.collect()
        gc.freeze()
        idle = float(os.environ.get("TVC_DAEMON_IDLE", launcher.DEFAULT_IDLE))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base + ".sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            listener.bind(base + ".sock")
        finally:
            os.umask(old)
        listener.listen(64)
        helper = Helper(base, listener, idle, fingerprint, lock_fd)
        info = {
            "pid": os.getpid(),
            "started": time.time(),
            "socket": base + ".sock",
            "python": sys.executable,
            "tvc": os.path.dirname(os.path.dirname(os.path.abspath(launcher.__file__))),
            "idle": idle,
        }
        _publish(base + ".json", json.dumps(info))
        helper.loop()
    finally:
        if listener is not None and listener.fileno() >= 0:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base + ".sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base + ".json")
        shutil.rmtree(base + ".warm", ignore_errors=True)
        os.close(lock_fd)


if __name__ == "__main__":
    serve(sys.argv[1])
