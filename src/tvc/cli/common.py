"""What every command shares: finding the registry, output (human or --json), progress bars."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from tvc.errors import PathError, UsageError

if TYPE_CHECKING:
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


class _Console(Console):
    """A Console for user data: nothing it prints is read as Rich markup or ``:emoji:`` codes
    (``w[bold].txt`` prints as itself, ``x[/b].txt`` does not crash it), and control
    characters in any string it renders — table cells included — are escaped. tvc's own
    styling asks for markup explicitly, with user text passed through ``rich.markup.escape``.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(shown(text, lines=True), **kwargs)


out: Console
err: Console


def reset_consoles() -> None:
    """(Re)build ``out`` and ``err``: a Console reads the terminal and environment when it is
    made, and a child of the helper (:mod:`tvc.cli.daemon`) takes over another process's."""
    global out, err
    out = _Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
    err = _Console(stderr=True, highlight=False, markup=False, emoji=False)


reset_consoles()


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
    """Byte progress on stderr; silent when --quiet or stderr is not a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self.enabled = not (quiet or state.quiet) and err.is_terminal
        self._p: Progress | None = None
        self._task = None

    def start(self, description: str, total: int) -> None:
        if not self.enabled:
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
            console=err,
            transient=True,
        )
        self._p.start()
        self._task = self._p.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def finish(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


def no_color() -> bool:
    return "NO_COLOR" in os.environ
