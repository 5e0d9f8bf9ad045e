"""Read-only views of history: log, show, ls."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tvc.cli import common
from tvc.cli.common import JsonOpt, shown, shown_lines
from tvc.repo.version import iso

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tvc.api import Registry
    from tvc.repo.version import FileEntry


def register(app: typer.Typer) -> None:
    app.command("log")(log)
    app.command("show")(show)
    app.command("ls")(ls)


def _decorations(refs: list[tuple[str, str]]) -> str:
    return ", ".join(shown(n) if k in ("branch", "remote") else f"{k}: {shown(n)}" for k, n in refs)


def _tracked(model: str) -> dict[str, list[tuple[str, str]]]:
    """The remotes' refs and numbers last seen here (``origin/main``, ``origin: v2``)."""
    from tvc.errors import TvcError
    from tvc.remote import tracking
    from tvc.repo.location import REGISTRY_DIR, find_root

    try:
        regdir = find_root(common.state.registry_path) / REGISTRY_DIR
    except (TvcError, OSError):
        return {}  # a server used directly: it has no remotes of its own here
    return tracking.decorations(regdir, model)


def _pairs(d: dict) -> str:
    return " ".join(f"{shown(k)}={shown(x)}" for k, x in d.items())


def log(
    ref: str = typer.Argument(..., help="MODEL or MODEL@REF to start from."),
    n: int = typer.Option(
        None, "-n", "--max-count", min=0, max=common.MAX_COUNT, help="Show at most N versions."
    ),
    json_: bool = JsonOpt,
) -> None:
    """History: versions reachable from REF, newest first."""
    from tvc.repo import coldread  # the cold start's path: no SQLAlchemy when it can answer

    quick = coldread.log(common.state.registry_path, ref, n)
    if quick is not None:
        versions = [v for v, _ in quick]
        decorations = {v.id: refs for v, refs in quick}
    else:
        with common.open_registry() as reg:
            versions = reg.log(ref, n)
            decorations = {v.id: reg.refs_pointing_at(v) for v in versions}
    if versions:
        for vid, more in _tracked(versions[0].model).items():
            if vid in decorations:
                decorations[vid] = [*decorations[vid], *more]
    if json_:
        docs = []
        for v in versions:
            d = v.to_json()
            d.pop("files")
            d["refs"] = [{"kind": k, "name": nm} for k, nm in decorations[v.id]]
            docs.append(d)
        common.emit_json(docs)
        return
    from rich.markup import escape

    for v in versions:
        deco = _decorations(decorations[v.id])
        deco = f" ({deco})" if deco else ""
        common.out.print(f"[bold yellow]{escape(v.ref)}[/] {v.short_id}{escape(deco)}", markup=True)
        common.out.print(f"  {common.when(v.created)}  {shown(v.author)}  [{shown(v.state)}]")
        extras = []
        if v.params:
            extras.append("params " + _pairs(v.params))
        if v.metrics:
            extras.append("metrics " + _pairs(v.metrics))
        common.out.print(f"  {shown_lines(v.message, '  ')}")
        for e in extras:
            common.out.print(f"  {e}")
        common.out.print("")


def show(
    ref: str = typer.Argument(..., help="MODEL@REF"),
    json_: bool = JsonOpt,
) -> None:
    """One version in full: metadata, lineage, files."""
    with common.open_registry() as reg:
        v = reg.show(ref)
        refs = [*reg.refs_pointing_at(v), *_tracked(v.model).get(v.id, [])]
        parents = [reg.version(p).ref for p in v.parents]
        base = reg.version(v.base).ref if v.base else None
        tensors = _tensor_counts(reg, v.files)
    if json_:
        doc = v.to_json()
        doc["refs"] = [{"kind": k, "name": n} for k, n in refs]
        doc["parent_refs"] = parents
        doc["base_ref"] = base
        for f in doc["files"]:
            f["tensors"] = tensors[f["path"]]
        common.emit_json(doc)
        return
    from rich.markup import escape

    p = common.out.print
    p(f"[bold yellow]{escape(v.ref)}[/]  {v.id}", markup=True)
    if refs:
        p(f"refs:     {_decorations(refs)}")
    p(f"author:   {shown(v.author)}")
    p(f"created:  {iso(v.created)}")
    p(f"state:    {shown(v.state)}")
    p(f"parents:  {', '.join(parents) or '-'}")
    if base:
        p(f"base:     {base}")
    p(f"size:     {common.human_bytes(v.size)}")
    p(f"message:  {shown_lines(v.message, ' ' * 10)}")
    for title, d in (("params", v.params), ("metrics", v.metrics)):
        if d:
            p(f"{title}:")
            for k, x in d.items():
                p(f"  {shown(k)} = {shown(x)}")
    if v.datasets:
        p("datasets:")
        for k, d in v.datasets.items():
            desc = d.get("id") or d.get("version")
            if d.get("digest"):
                stored = f" (stored as {d['version']})" if d.get("version") else ""
                desc = f"{d.get('path')} blake3:{str(d['digest'])[:12]}{stored}"
            p(f"  {shown(k)} = {shown(desc)}")
    if v.code:
        dirty = " (dirty)" if v.code.get("dirty") else ""
        p(f"code:     {shown(v.code.get('commit'))}{dirty}")
    _columns(
        ("path", "size", "format", "tensors"),
        (
            (shown(f.path), common.human_bytes(f.size), shown(f.format), str(tensors[f.path] or ""))
            for f in v.files
        ),
    )


def ls(
    ref: str = typer.Argument(None, help="Nothing for models; MODEL[@REF] for files."),
    json_: bool = JsonOpt,
) -> None:
    """Models in the registry, or the files of one version."""
    with common.open_registry() as reg:
        if ref is None:
            models = reg.models()
            if json_:
                for m in models:
                    m["updated"] = iso(m["updated"]) if m["updated"] else None
                common.emit_json(models)
                return
            from rich.table import Table

            table = Table("model", "versions", "latest", "branches", "updated", box=None)
            for m in models:
                table.add_row(
                    shown(m["model"]),
                    str(m["versions"]),
                    shown(m["latest"] or "-"),
                    ", ".join(shown(b) for b in m["branches"]),
                    common.when(m["updated"]) if m["updated"] else "-",
                )
            common.out.print(table)
            return
        v = reg.resolve(ref)
        tensors = _tensor_counts(reg, v.files)
        rows = [{**f.to_json(), "tensors": tensors[f.path]} for f in v.files]
    if json_:
        common.emit_json({"ref": v.ref, "id": v.id, "files": rows})
        return
    _columns(
        ("path", "size", "format", "tensors", "blake3"),
        (
            (
                shown(r["path"]),
                common.human_bytes(r["size"]),
                shown(r["format"]),
                str(r["tensors"] or ""),
                r["digest"][:12],
            )
            for r in rows
        ),
    )


def _tensor_counts(reg: Registry, files: list[FileEntry]) -> dict[str, int]:
    """Tensors per file. An opaque file has none by construction, so only the other files'
    manifests are read, in batched queries: ``ls`` of 100,000 small files is a few queries."""
    parsed = [f for f in files if f.format != "opaque"]
    reg.prefetch_manifests(f.manifest_id for f in parsed)
    counts = dict.fromkeys((f.path for f in files), 0)
    counts.update((f.path, len(reg.manifest(f.manifest_id).tensors)) for f in parsed)
    return counts


def _columns(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    """A table of file rows as plain aligned text (cells already made safe with ``shown``).

    Rich's Table measures and wraps every cell: 1.4 ms a row, 140 s for 100,000 files. Rows
    are data, so nothing here is cropped or wrapped, whatever the terminal's width.
    """
    from rich.cells import cell_len

    table = [header, *rows]
    widths = [max(cell_len(r[i]) for r in table) for i in range(len(header))]
    last = len(header) - 1
    lines = []
    for r in table:
        cells = [c + " " * (widths[i] - cell_len(c)) if i < last else c for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip() + "\n")
    common.out.file.write("".join(lines))
