"""Entry point: global options, command registration, and the one place errors become exit codes."""

from __future__ import annotations

import errno
import functools
import io
import os
import sys
from collections.abc import Callable
from typing import Any

import click
import typer

from tvc.cli import (
    analysis,
    common,
    inspect,
    maintenance,
    refs,
    registry_cmds,
    remote_cmds,
    serve_cmds,
    snapshot,
    ui_cmds,
)
from tvc.errors import ExistsError, PathError, StorageError, TvcError, UsageError


class _LazyGroup(typer.core.TyperGroup):
    """The ``tvc`` group, building a subcommand's Click command when it is first looked up.

    Typer builds every command up front by inspecting its function's signature: 25-30 ms for
    tvc's 45 commands and groups, a tenth of a small commit.
    A command line names one; only ``tvc --help`` and an unknown name need them all.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[str, Callable[[], click.Command]] = {}
        self.order: list[str] = list(self.commands)  # registration order, as Typer lists them

    def add_pending(self, name: str, build: Callable[[], click.Command]) -> None:
        self.pending[name] = build
        self.order.append(name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.order)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        build = self.pending.pop(cmd_name, None)
        if build is not None:
            self.commands[cmd_name] = build()
        elif cmd_name not in self.commands:
            self.build_all()  # Click suggests close names from `commands`
        return super().get_command(ctx, cmd_name)

    def build_all(self) -> None:
        for name in list(self.pending):
            self.commands[name] = self.pending.pop(name)()


app = typer.Typer(
    name="tvc",
    help="Version control, a model registry and model serving for large AI models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=_LazyGroup,
)


def _print_version(value: bool) -> None:
    if value:
        from tvc import __version__

        sys.stdout.write(f"tvc {__version__}\n")
        raise typer.Exit()


@app.callback()
def _global(
    registry: str = typer.Option(
        None,
        "--registry",
        "-R",
        envvar=["TVC_DIR", "TVC_REGISTRY"],
        help="Registry directory, or a server URL to use directly (default: the nearest .tvc/ "
        "at or above the working directory).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    common.state.registry_path = registry
    common.state.quiet = quiet


for module in (snapshot, inspect, refs, maintenance, analysis, registry_cmds, remote_cmds):
    module.register(app)
serve_cmds.register(app)
ui_cmds.register(app)  # tvc ui


_command: _LazyGroup | None = None


def command() -> _LazyGroup:
    """The root Click group, made once per process; its subcommands are built on demand.

    ``app(...)`` rebuilds every command on every call; the resident helper calls
    :meth:`_LazyGroup.build_all` before forking, so its children start with all of them.
    """
    global _command
    if _command is None:
        tm = typer.main
        kw: dict[str, Any] = {
            "pretty_exceptions_short": app.pretty_exceptions_short,
            "rich_markup_mode": app.rich_markup_mode,
        }
        commands, groups = app.registered_commands, app.registered_groups
        app.registered_commands, app.registered_groups = [], []
        try:  # the group itself: the global options' callback, no subcommands yet
            root = tm.get_group_from_info(tm.TyperInfo(app), **kw)
        finally:
            app.registered_commands, app.registered_groups = commands, groups
        assert isinstance(root, _LazyGroup)
        for info in commands:
            name = info.name or tm.get_command_name(info.callback.__name__)
            root.add_pending(name, functools.partial(tm.get_command_from_info, info, **kw))
        for group in groups:
            name = tm.solve_typer_info_defaults(group).name
            root.add_pending(name, functools.partial(tm.get_group_from_info, group, **kw))
        _command = root
    return _command


def _error(exc: TvcError) -> int:
    # Plain write: one line, never wrapped to the terminal width, no control characters.
    sys.stderr.write(f"tvc: error: {common.shown(' '.join(exc.message.split()))}\n")
    return exc.exit_code


# OS errors that are the environment's doing, not a bug: the disk or permissions (exit 10),
# or a path the user gave that cannot be one (exit 7).
_STORAGE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
_PATH = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENOENT}


def _unexpected(exc: Exception) -> int:
    """The last resort: an exception no layer turned into a TvcError is still one line.

    The working directory may have been deleted under the command (everything relative to it
    then fails); an OS error of the disk, of permissions or of a path the user gave is shown
    as the storage, path or exists error it is; anything else is a bug in tvc, shown as such.
    ``TVC_DEBUG=1`` adds the traceback of any of them: each is a cause to fix where it arose.
    """
    if os.environ.get("TVC_DEBUG", "").strip() not in ("", "0"):
        import traceback

        traceback.print_exc()
    try:
        os.getcwd()
    except OSError:
        return _error(
            PathError("the working directory no longer exists: cd to an existing directory")
        )
    if isinstance(exc, OSError) and exc.errno in _STORAGE | _PATH | {errno.EEXIST}:
        where = f": {exc.filename}" if exc.filename else ""
        kind = StorageError if exc.errno in _STORAGE else PathError
        if exc.errno == errno.EEXIST:
            kind = ExistsError
        return _error(kind(f"{exc.strerror}{where}"))
    if isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
        # Bytes that are not UTF-8 (a name typed in another encoding, a file name on disk)
        # reached a layer that stores text: a usage error naming them, not a crash.
        text = exc.object if isinstance(exc.object, str) else ""
        where = text[max(0, exc.start - 20) : exc.end + 20]
        return _error(
            UsageError(f"not UTF-8 text: {where!r} (tvc keeps names and messages as UTF-8)")
        )
    if isinstance(exc, ValueError) and "null byte" in str(exc):  # only in-process: no argv has one
        return _error(PathError("a path cannot contain a NUL byte"))
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:300]
    sys.stderr.write(
        f"tvc: internal error: {common.shown(name)}: {common.shown(text)} "
        "(a bug in tvc; TVC_DEBUG=1 shows where)\n"
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code. Usage errors are Typer's (exit 2), ours are TvcError,
    and nothing else reaches the user as a traceback."""
    try:
        code = command().main(args=argv, prog_name="tvc", standalone_mode=False)
    except click.ClickException as exc:
        # Click's usage errors quote what was typed (a file name from a script, say): shown
        # as Click shows them, control characters escaped.
        text = io.StringIO()
        exc.show(file=text)
        sys.stderr.write(common.shown(text.getvalue(), lines=True))
        return exc.exit_code
    except click.Abort:
        sys.stderr.write("tvc: aborted\n")
        return 1
    except TvcError as exc:
        return _error(exc)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        sys.stderr.write("tvc: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader left (`tvc cat … | head`): quiet, and no second complaint when the
        # interpreter flushes stdout at exit; exit 1 as Typer's own handler gives (the output
        # is incomplete).
        _silence_stdout()
        return 1
    except Exception as exc:
        return _unexpected(exc)
    return code if isinstance(code, int) else 0  # an exit code, or a command's None


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _keep_freed_buffers() -> None:
    """Let glibc reuse freed multi-MiB buffers instead of unmapping them (Linux only).

    A commit or checkout allocates and frees several 4 MiB buffers per chunk (reads, planes,
    deltas). By default glibc serves such sizes with fresh mmaps until its adaptive threshold
    catches up and trims freed heap memory back to the OS, so a new process faults in every
    page again: 474k page faults and 9.6 s of system time committing a 4.5 GB file here. With a
    32 MiB mmap threshold and a 256 MiB trim threshold: 48k faults, 6.3 s, and 9-14 % less
    wall time; peak RSS unchanged (the pipeline bounds what is alive). Set in the CLI process
    only: a library must not retune its host's allocator.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def run() -> None:  # pragma: no cover - console script shim
    """The console script: run, flush, and leave without tearing the interpreter down.

    Finalizing the modules tvc loads (SQLAlchemy, numpy) takes 0.1-0.2 s — a third of a small
    command. Every file and DB connection is closed by the time ``main`` returns, so there is
    nothing left for finalization to do but spend that time.
    """
    _keep_freed_buffers()
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
