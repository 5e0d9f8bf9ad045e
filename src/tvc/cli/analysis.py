"""Comparing and combining versions: diff, blame, merge."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from tvc.analysis import Blame, Diff, MergeResult, TensorDiff, ValueDiff
    from tvc.analysis.blame import BlameEntry
from tvc.cli import common
from tvc.cli.common import JsonOpt, QuietOpt, shown

# Spelled out (not imported) so the CLI starts without loading the analysis layer.
STRATEGIES = ("average", "task-arithmetic", "ours", "theirs")


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)
    app.command("blame")(blame)
    app.command("merge")(merge)


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Plain aligned columns, never wrapped (names and messages can be long); last one ragged.
    Cells are user data: control characters and line breaks in them are escaped."""
    rows = [[shown(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]
        common.out.print("  ".join(cells).rstrip(), markup=False)


# -- diff ------------------------------------------------------------------------------------
def diff(
    ref_a: str = typer.Argument(..., help="The old side, MODEL@REF."),
    ref_b: str = typer.Argument(..., help="The new side, MODEL@REF (any model)."),
    path: str = typer.Option(None, "--path", help="Only this file (or directory)."),
    all_: bool = typer.Option(False, "--all", "-a", help="Also list what is unchanged."),
    no_stats: bool = typer.Option(
        False, "--no-stats", help="Do not read changed tensors (statuses only, from manifests)."
    ),
    json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Compare two versions: files, tensors, params, metrics, small text files.

    Changed tensors show their relative L2 change ‖B−A‖/‖A‖, max abs change and cosine
    similarity; unchanged ones are recognized from chunk ids without being read.
    """
    with common.open_registry() as reg:
        d = reg.diff(
            ref_a, ref_b, path=path, stats=not no_stats, progress=common.RichProgress(quiet)
        )
    if json_:
        common.emit_json(d.to_json())
        return
    _print_diff(d, all_)


def _num(x: float | None, fmt: str = ".3e") -> str:
    return "-" if x is None else format(x, fmt)


def _shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "[" + ", ".join(map(str, s)) + "]"


def _change_order(t: TensorDiff) -> tuple:
    rank = {"changed": 0, "dtype_changed": 0, "shape_changed": 1, "added": 2, "removed": 3}
    return (rank.get(t.status, 4), t.rel_l2 is None, -(t.rel_l2 or 0.0), t.path, t.name)


def _value(x: object) -> str:
    return shown(x if isinstance(x, str) else json.dumps(x, default=str))


def _values(title: str, rows: list[ValueDiff], all_: bool) -> None:
    listed = [r for r in rows if all_ or r.status != "unchanged"]
    if not listed:
        return
    common.out.print(f"{title}:")
    for r in listed:
        a, b, key = _value(r.a), _value(r.b), shown(r.key)
        if r.status == "added":
            line = f"  + {key} = {b}"
        elif r.status == "removed":
            line = f"  - {key} = {a}"
        elif r.status == "changed":
            line = f"  ~ {key}: {a} → {b}"
        else:
            line = f"    {key} = {a}"
        common.out.print(line, markup=False)


def _print_diff(d: Diff, all_: bool) -> None:
    p = common.out.print
    p(f"{d.a.ref} {d.a.short_id} → {d.b.ref} {d.b.short_id}", markup=False)
    marks = {"added": "A", "removed": "D", "changed": "M", "unchanged": " "}
    files = [f for f in d.files if all_ or f.status != "unchanged"]
    counts = d.counts()["files"]
    p("files: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) if d.files else "files: -")
    for f in files:
        p(f"  {marks[f.status]} {shown(f.path)}")
    _values("params", d.params, all_)
    _values("metrics", d.metrics, all_)
    _values("datasets", d.datasets, all_)

    rows = sorted((t for t in d.tensors if all_ or t.status != "unchanged"), key=_change_order)
    if rows:
        several = len({t.path for t in d.tensors}) > 1
        cols = ["status", *(["file"] if several else []), "tensor", "shape", "dtype"]
        table = []
        for t in rows:
            shape = _shape(t.shape_b if t.shape_b is not None else t.shape_a)
            if t.status == "shape_changed":
                shape = f"{_shape(t.shape_a)} → {_shape(t.shape_b)}"
            dtype = t.dtype_b or t.dtype_a or "-"
            if t.dtype_a and t.dtype_b and t.dtype_a != t.dtype_b:
                dtype = f"{t.dtype_a} → {t.dtype_b}"
            table.append(
                [
                    t.status.replace("_", " "),
                    *([t.path] if several else []),
                    t.name,
                    shape,
                    dtype,
                    _num(t.rel_l2),
                    _num(t.max_abs),
                    _num(t.cosine, ".6f"),
                ]
            )
        _table([*cols, "rel L2", "max abs", "cosine"], table)
    if d.tensors:
        p(d.summary())
    for f in d.files:
        if f.text_diff:
            p(f.text_diff.rstrip("\n"), markup=False)


# -- blame -----------------------------------------------------------------------------------
def blame(
    ref: str = typer.Argument(..., help="MODEL@REF"),
    path: str = typer.Argument(None, help="Only this file."),
    json_: bool = JsonOpt,
) -> None:
    """For each tensor (and file), the version that last changed it."""
    with common.open_registry() as reg:
        b = reg.blame(ref, path)
    if json_:
        common.emit_json(b.to_json())
        return
    _print_blame(b)


def _print_blame(b: Blame) -> None:
    table: list[list[str]] = []

    def row(label: str, e: BlameEntry) -> None:
        msg = shown(e.version.message.splitlines()[0]) if e.version.message else ""
        if e.base is not None:
            msg = f"{msg} (= base {e.base.ref})"
        if e.merged_from is not None:
            msg = f"{msg} (from {e.merged_from.ref})"
        v = e.version
        table.append([label, v.ref, v.short_id, common.when(v.created), msg])

    for f in b.files:
        row(f.path, f)
        for t in b.tensors:
            if t.path == f.path:
                row(f"  {t.name}", t)
    _table(["file / tensor", "version", "id", "date", "message"], table)


# -- merge -----------------------------------------------------------------------------------
def merge(
    ref_a: str = typer.Argument(..., help="Ours: the branch to merge into (MODEL@BRANCH)."),
    ref_b: str = typer.Argument(..., help="Theirs: the version to merge in (any model)."),
    strategy: str = typer.Option(..., "--strategy", "-s", help=f"{'|'.join(STRATEGIES)}."),
    message: str = typer.Option(None, "--message", "-m", help="Message of the merge version."),
    lambda_a: float = typer.Option(1.0, "--lambda-a", help="Task arithmetic: weight of A − O."),
    lambda_b: float = typer.Option(1.0, "--lambda-b", help="Task arithmetic: weight of B − O."),
    branch: str = typer.Option(None, "--branch", "-b", help="Branch to commit on (head = A)."),
    ancestor: str = typer.Option(None, "--ancestor", help="Use this merge base (MODEL@REF)."),
    files: str = typer.Option(
        None, "--files", help="Opaque files both sides changed: take ours|theirs."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Report only; commit nothing."),
    json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Merge B into A's branch tensor by tensor; commits a version with parents A and B."""
    with common.open_registry() as reg:
        res = reg.merge(
            ref_a,
            ref_b,
            strategy=strategy,
            message=message,
            lambda_a=lambda_a,
            lambda_b=lambda_b,
            branch=branch,
            ancestor=ancestor,
            file_strategy=files,
            dry_run=dry_run,
            progress=common.RichProgress(quiet),
        )
    if json_:
        common.emit_json(res.to_json())
        return
    _print_merge(res)


def _print_merge(res: MergeResult) -> None:
    p = common.out.print
    anc = res.ancestor.ref if res.ancestor else "none"
    what = f"{res.b.ref} into {res.a.ref} on {res.branch} ({res.strategy}; ancestor {anc})"
    if res.version is not None:
        p(f"{res.version.ref} {res.version.id}", markup=False)
        p(f"  merged {what}", markup=False)
    else:
        p(f"would merge {what}", markup=False)
    c = res.counts()
    p(
        f"  tensors: {c['unchanged']} unchanged, {c['a']} from A, {c['b']} from B, "
        f"{c['merged']} merged, {c['removed']} removed; {len(res.conflicts)} conflict(s)",
        markup=False,
    )
    for conflict in res.conflicts:
        name = getattr(conflict, "name", None)
        where = shown(f"{conflict.path}:{name}" if name else conflict.path)
        p(f"  conflict {where}: both changed → {conflict.resolution}", markup=False)
