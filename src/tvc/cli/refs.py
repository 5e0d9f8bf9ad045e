"""Branches and tags."""

from __future__ import annotations

import typer

from tvc.cli import common
from tvc.cli.common import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("branch")(branch)
    app.command("tag")(tag)


def _list(reg, model: str, kind: str, json_: bool) -> None:
    rows = [r for r in reg.refs_of(model) if r["kind"] == kind]
    if json_:
        common.emit_json([{k: r[k] for k in ("name", "version", "id")} for r in rows])
        return
    for r in rows:
        common.out.print(f"{r['name']:<24} {r['version']:<6} {r['id'][:12]}", markup=False)


def branch(
    model: str = typer.Argument(..., help="Model name."),
    name: str = typer.Argument(None, help="Branch to create (omit to list)."),
    start: str = typer.Option(None, "--from", help="Where the branch starts (default: main)."),
    delete: str = typer.Option(None, "-d", "--delete", help="Delete this branch."),
    json_: bool = JsonOpt,
) -> None:
    """List, create (--from REF) or delete (-d) branches."""
    with common.open_registry() as reg:
        if delete:
            reg.delete_branch(model, delete)
            common.out.print(f"Deleted branch {delete} of {model}")
        elif name:
            v = reg.branch(model, name, start)
            common.out.print(f"Branch {name} of {model} at {v.ref} {v.short_id}")
        else:
            _list(reg, model, "branch", json_)


def tag(
    model: str = typer.Argument(..., help="Model name."),
    name: str = typer.Argument(None, help="Tag to create (omit to list)."),
    ref: str = typer.Argument(None, help="Version to tag (default: main)."),
    delete: bool = typer.Option(False, "-d", "--delete", help="Delete tag NAME."),
    json_: bool = JsonOpt,
) -> None:
    """List, create or delete (-d) tags. Tags never move."""
    with common.open_registry() as reg:
        if name and delete:
            reg.delete_tag(model, name)
            common.out.print(f"Deleted tag {name} of {model}")
        elif name:
            v = reg.tag(model, name, ref)
            common.out.print(f"Tagged {v.ref} {v.short_id} as {name}")
        else:
            _list(reg, model, "tag", json_)
