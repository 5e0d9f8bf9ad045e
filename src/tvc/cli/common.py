"""What every command shares: finding the registry, output (human or --json), progress bars."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from tvc.errors import PathError, UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from tvc.api import Registry

# Characters that move the cursor, recolour or retitle a terminal, or reorder what it shows:
# C0 (but tab and newline), DEL, C1, and the bidirectional overrides and isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_BREAK = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def shown(value: object, *, lines: bool = False) -> str:
    """User text as a human may safely see it: control characters as escapes (``\\x1b``,
    ``\\r``, ``\\u202e``) instead of instructions to the terminal, so a file name or a commit
    message cannot recolour, rewrite or reorder what is on the screen. Newlines stay only with
    ``lines`` (messages); in names they would forge lines of output. ``--json`` does not use
    this: JSON escapes them itself and keeps the text exact.
    """
    text = value if isinstance(value, str) else str(value)
    return (_CONTROL if lines else _CONTROL_OR_BREAK).sub(_escaped, text)


def shown_lines(text: str, indent: str) -> str:
    """A multi-line text (a commit message) with every line after the first indented, so no
    line of it can pass for a line of tvc's own output."""
    return shown(text, lines=True).replace("\n", "\n" + indent)


def _console(stderr: bool) -> Console:
    """A Console for user data: nothing it prints is read as Rich markup or ``:emoji:`` codes
    (``w[bold].txt`` prints as itself, ``x[/b].txt`` does not crash it), and control
    characters in any string it renders — table cells included — are escaped. tvc's own
    styling asks for markup explicitly, with user text passed through ``rich.markup.escape``.
    """
    from rich.console import Console

    class _Console(Console):
        def render_str(self, text: str, **kwargs: Any) -> Any:
            return super().render_str(shown(text, lines=True), **kwargs)

    if stderr:
        return _Console(stderr=True, highlight=False, markup=False, emoji=False)
    return _Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


def __getattr__(name: str) -> Any:
    """``out`` and ``err``, made on first use: Rich costs a command 15-20 ms to import, and
    the commands that print a plain line or two (commit, checkout) never need it."""
    if name in ("out", "err"):
        globals()[name] = console = _console(stderr=name == "err")
        return console
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    out: Console
    err: Console


def reset_consoles() -> None:
    """Forget ``out`` and ``err``: a Console reads the terminal and environment when it is
    made, and a child of the helper (:mod:`tvc.cli.daemon`) takes over another process's."""
    globals().pop("out", None)
    globals().pop("err", None)


def say(line: str) -> None:
    """One plain line of tvc's own output on stdout, as ``out.print`` would show it (control
    characters escaped, never wrapped), without loading Rich."""
    sys.stdout.write(shown(line, lines=True) + "\n")


class State:
    registry_path: str | None = None
    quiet: bool = False


state = State()

# Counts and depths the user gives: beyond this they mean "all", and the database cannot take
# an integer above 2**63 - 1 at all (an OverflowError, before).
MAX_COUNT = 2**31 - 1

JsonOpt = typer.Option(False, "--json", help="Machine-readable output (stable keys).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def open_registry() -> Registry:
    # Imported here: every layer loads with it, and `tvc --help` needs none of them.
    from tvc.api import Registry

    path = state.registry_path
    if path is None or not os.path.isabs(path):
        try:
            os.getcwd()
        except OSError:
            raise PathError(
                "the working directory no longer exists: cd to an existing directory "
                "(or give -R with an absolute path)"
            ) from None
    reg = Registry(path)
    if hasattr(reg, "auto_refresh"):  # a server used directly: one command, one refresh
        reg.auto_refresh = False
    return reg


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def parse_value(text: str) -> Any:
    """``--param``/``--metric`` values: numbers stay numbers, true/false/null are JSON's."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    out_: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise UsageError(f"{what} {item!r}: empty key")
        out_[k] = parse_value(v)
    return out_


class RichProgress:
    """Byte progress on stderr; silent when --quiet or stderr is not a terminal.

    The bar appears once an operation has run for :attr:`DELAY` seconds (as git's progress
    does): a small commit or checkout ends before, without a bar flashing by and without
    loading Rich for it.
    """

    DELAY = 0.3

    def __init__(self, quiet: bool = False) -> None:
        self.enabled = not (quiet or state.quiet)
        self._p: Progress | None = None
        self._task = None
        self._pending: tuple[str, int, float] | None = None
        self._done = 0

    def start(self, description: str, total: int) -> None:
        if self.enabled:
            self._pending = (description, total, time.monotonic() + self.DELAY)
            self._done = 0

    def _show(self) -> None:
        description, total, _due = self._pending or ("", 0, 0.0)
        self._pending = None
        console = sys.modules[__name__].err  # made here if no one printed to it yet
        if not console.is_terminal:
            self.enabled = False
            return
        # Loaded only for a bar on a terminal (rich.progress brings rich.table and more).
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._p.start()
        self._task = self._p.add_task(description, total=total, completed=self._done)

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)
        elif self._pending is not None:
            self._done += n
            if time.monotonic() >= self._pending[2]:
                self._show()

    def finish(self) -> None:
        self._pending = None
        if self._p is not None:
            self._p.stop()
            self._p = None


def no_color() -> bool:
    return "NO_COLOR" in os.environ
