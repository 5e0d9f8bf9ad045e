"""What every command shares: finding the registry, output (human or --json), progress bars."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tvc.errors import UsageError

if TYPE_CHECKING:
    from tvc.api import Registry

out: Console
err: Console


def reset_consoles() -> None:
    """(Re)build ``out`` and ``err``: a Console reads the terminal and environment when it is
    made, and a child of the helper (:mod:`tvc.cli.daemon`) takes over another process's."""
    global out, err
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False)


reset_consoles()


class State:
    registry_path: str | None = None
    quiet: bool = False


state = State()

JsonOpt = typer.Option(False, "--json", help="Machine-readable output (stable keys).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def open_registry() -> Registry:
    # Imported here: every layer loads with it, and `tvc --help` needs none of them.
    from tvc.api import Registry

    return Registry(state.registry_path)


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
