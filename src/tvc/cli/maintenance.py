"""Store health (stats, fsck, gc) and the resident helper (daemon)."""

from __future__ import annotations

import typer
from rich.table import Table

from tvc.cli import common
from tvc.cli.common import JsonOpt, QuietOpt, human_bytes
from tvc.errors import TvcError, UsageError

daemon_app = typer.Typer(
    help="The resident helper that spares each command the 0.4 s of Python imports.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
    app.command("fsck")(fsck)
    app.command("gc")(gc)
    app.command("rm")(rm)
    app.add_typer(daemon_app, name="daemon")


def stats(json_: bool = JsonOpt) -> None:
    """Logical bytes versus stored bytes, and what saved the difference."""
    with common.open_registry() as reg:
        st = reg.stats()
    if json_:
        common.emit_json(st)
        return
    p = common.out.print
    table = Table(
        "model",
        "versions",
        "logical",
        "unique",
        "stored",
        "dedup",
        "compression",
        "delta",
        box=None,
    )
    for name, m in st["models"].items():
        sv = m["saved"]
        table.add_row(
            name,
            str(m["versions"]),
            *(human_bytes(m[k]) for k in ("logical_bytes", "unique_bytes", "stored_bytes")),
            *(human_bytes(sv[k]) for k in ("dedup", "compression", "delta")),
        )
    p(table)
    logical = st["logical_bytes"] or 1
    p(f"versions {st['versions']}, files {st['files']}, chunks {st['chunks']}, packs {st['packs']}")
    p(f"logical  {human_bytes(st['logical_bytes'])}")
    saved = st["saved"]
    p(f"unique   {human_bytes(st['unique_bytes'])}  (dedup saved {human_bytes(saved['dedup'])})")
    p(
        f"stored   {human_bytes(st['stored_bytes'])}  "
        f"(compression saved {human_bytes(st['saved']['compression'])}, "
        f"delta saved {human_bytes(st['saved']['delta'])})"
    )
    # The packs add a fixed header per chunk to the stored payloads: that is all on disk.
    p(f"on disk  {human_bytes(st['pack_bytes'])} in packs (payloads and their entry headers)")
    p(f"ratio    {st['pack_bytes'] / logical:.3f} on disk / logical")


def fsck(
    read_data: bool = typer.Option(
        False, "--read-data", help="Also re-read and re-hash every byte."
    ),
    rebuild_index: bool = typer.Option(
        False,
        "--rebuild-index",
        help="Rebuild the metadata DB from the store (lost, damaged or older DB).",
    ),
    json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Verify the registry's invariants; exit 8 if anything is wrong."""
    if rebuild_index:
        _rebuild(json_, quiet)
        return
    with common.open_registry() as reg:
        res = reg.fsck(read_data=read_data, progress=common.RichProgress(quiet))
    if json_:
        common.emit_json(res)
    else:
        for w in res["warnings"]:
            common.err.print(f"warning: {w}", markup=False)
        for e in res["errors"]:
            common.err.print(f"error: {e}", markup=False)
        c = res["checked"]
        common.out.print(
            f"checked {c['versions']} versions, {c['manifests']} manifests, {c['chunks']} chunks, "
            f"{c['packs']} packs" + (f", read {human_bytes(c['bytes_read'])}" if read_data else "")
        )
        common.out.print("no errors found" if res["ok"] else f"{len(res['errors'])} error(s)")
    if not res["ok"]:
        raise typer.Exit(8)


def _rebuild(json_: bool, quiet: bool) -> None:
    from tvc.api import Registry

    res = Registry.rebuild_index(common.state.registry_path, common.RichProgress(quiet))
    if json_:
        common.emit_json(res)
        return
    p = common.out.print
    p(
        f"rebuilt the index: {res['versions']} versions, {res['manifests']} manifests, "
        f"{res['chunks']} chunks in {res['packs']} packs, {res['events']} journal events"
    )
    for ref in res["recovered"]:
        common.err.print(f"recovered (no commit record, on no branch): {ref}", markup=False)
    for ref in res["renumbered"]:
        common.err.print(f"renumbered (its number was taken): {ref}", markup=False)
    for what in res["unreadable"]:
        common.err.print(f"warning: unreadable: {what}", markup=False)
    if res.get("previous_db"):
        p(f"the previous DB is kept as {res['previous_db']}", markup=False)


def _seconds(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``1h``, ``2d`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1
    if not (0 <= value < 1e9):
        raise UsageError(f"--grace {text!r}: expected a duration such as 0, 90s, 15m, 1h, 2d")
    return value


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only report what would go."),
    grace: str = typer.Option(
        None,
        "--grace",
        help="Keep unindexed packs younger than this (writes in flight; default 1h).",
    ),
    keep_last: int = typer.Option(
        None,
        "--keep-last",
        help="First delete versions not among the last N of a branch (tags, aliases, "
        "production and their inputs are kept).",
    ),
    json_: bool = JsonOpt,
) -> None:
    """Remove what no version uses: crash leftovers, unreferenced chunks and manifests."""
    seconds = _seconds(grace) if grace is not None else None
    with common.open_registry() as reg:
        res = reg.gc(dry_run=dry_run, grace=seconds, keep_last=keep_last)
    if json_:
        common.emit_json(res)
        return
    verb = "would free" if dry_run else "freed"
    if res.get("removed"):
        what = "would delete" if dry_run else "deleted"
        common.out.print(f"{what} {len(res['removed'])} version(s): {', '.join(res['removed'])}")
    common.out.print(
        f"{verb} {human_bytes(res['bytes_freed'])}: {res['unindexed_packs']} unindexed pack(s), "
        f"{res['chunks_removed']} chunk(s), {res['packs_removed']} pack(s) removed, "
        f"{res['packs_rewritten']} rewritten, {res['manifests_removed']} manifest(s), "
        f"{res['temp_files']} temp file(s)"
    )


def rm(
    target: str = typer.Argument(..., help="MODEL@REF (one version) or MODEL (the whole model)."),
    force: bool = typer.Option(
        False, "--force", "-f", help="Also when tagged, aliased or in production."
    ),
    reason: str = typer.Option("", "--reason", "-r", help="Why (recorded in the audit log)."),
    json_: bool = JsonOpt,
) -> None:
    """Delete a version or a model (recorded); `tvc gc` then reclaims its bytes."""
    with common.open_registry() as reg:
        if "@" in target or "~" in target:
            gone = reg.rm(target, force=force, reason=reason)
        else:
            gone = reg.rm_model(target, force=force, reason=reason)
    if json_:
        common.emit_json({"deleted": [v.ref for v in gone], "ids": [v.id for v in gone]})
        return
    common.out.print(f"deleted {len(gone)} version(s): {', '.join(v.ref for v in gone)}")


def _runtime_dir() -> str:
    from tvc.cli import launcher

    directory = launcher.runtime_dir()
    if directory is None:
        raise UsageError(
            "no safe directory for the helper's socket: set TVC_DAEMON_DIR to a directory "
            "only you can open (mode 700)"
        )
    return directory


@daemon_app.command("status")
def daemon_status(json_: bool = JsonOpt) -> None:
    """List the running helpers; `current` marks the one this installation's commands use."""
    from tvc.cli import launcher

    directory = _runtime_dir()
    current = launcher.helper_key()
    helpers = launcher.live_helpers(directory)
    for h in helpers:
        h["current"] = h["key"] == current
    if json_:
        common.emit_json({"enabled": launcher.enabled(), "dir": directory, "helpers": helpers})
        return
    state = "on" if launcher.enabled() else "off (TVC_DAEMON=0)"
    common.out.print(f"helper: {state}; sockets in {directory}")
    for h in helpers:
        mark = " (current)" if h["current"] else ""
        if h.get("failed"):
            common.out.print(f"  failed to start  {h['key']}{mark}: {h['failed']}")
            continue
        started = common.when(h["started"]) if h.get("started") else "starting"
        common.out.print(f"  pid {h.get('pid') or '-'}  since {started}  {h['key']}{mark}")
    if not helpers:
        common.out.print("  none running")


@daemon_app.command("start")
def daemon_start() -> None:
    """Start this installation's helper now and wait until it accepts commands."""
    from tvc.cli import launcher

    if not launcher.enabled():
        raise UsageError("the helper is off here (TVC_DAEMON=0, or not Linux)")
    path = launcher.start_helper(_runtime_dir())
    if path is None:
        raise TvcError("the helper did not start within 30 s")
    common.out.print(f"helper ready on {path}")


@daemon_app.command("stop")
def daemon_stop() -> None:
    """Stop every helper of this user (each finishes the commands it is running first), and
    forget helpers that failed to start, so the next command tries again."""
    from tvc.cli import launcher

    stopped = launcher.stop_helpers(_runtime_dir())
    common.out.print(f"stopped {len(stopped)} helper(s)")
