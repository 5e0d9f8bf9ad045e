"""Commands that write or read whole snapshots: init, commit, checkout, cat."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import typer

from tvc.cli import common
from tvc.cli.common import JsonOpt, QuietOpt, shown
from tvc.errors import ExistsError, PathError


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("commit")(commit)
    app.command("checkout")(checkout)
    app.command("cat")(cat)


def init(
    directory: Path = typer.Argument(Path("."), help="Where to create .tvc/ (default: here)."),
    store: str = typer.Option(
        None, "--store", help="Where packs live: a path, or s3://BUCKET[/PREFIX]?endpoint=URL."
    ),
    db: str = typer.Option(None, "--db", help="Metadata DB URL, e.g. postgresql://u@host/db."),
    json_: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
) -> None:
    """Create a registry: SQLite metadata + local packs in DIR/.tvc (or --store, --db)."""
    from tvc.api import Registry

    reg = Registry.init(directory, store=store, metadata=db)
    if json_:
        common.emit_json({"registry": str(reg.dir)})
    elif not (quiet or common.state.quiet):
        common.out.print(f"Initialized empty tvc registry in {shown(reg.dir)}")
    reg.close()


def _datasets(specs: list[str] | None) -> dict[str, str]:
    """``NAME=PATH|MODEL@REF|ID`` options; the registry decides which (a path if it exists)."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, eq, ref = spec.partition("=")
        if not eq or not name or not ref:
            raise common.UsageError(f"--dataset {spec!r}: expected NAME=PATH or NAME=ID")
        out[name] = ref
    return out


def commit(
    model: str = typer.Argument(..., help="Model name, e.g. bert or team/bert."),
    paths: list[Path] = typer.Argument(..., help="Files and directories to snapshot."),
    message: str = typer.Option(..., "--message", "-m", help="What changed."),
    branch: str = typer.Option("main", "--branch", "-b", help="Branch to commit on."),
    param: list[str] = typer.Option(None, "--param", "-p", help="Training parameter k=v."),
    metric: list[str] = typer.Option(None, "--metric", help="Evaluation result k=v."),
    dataset: list[str] = typer.Option(
        None, "--dataset", help="Data set NAME=PATH|MODEL@REF|ID (a path: by content hash)."
    ),
    store_dataset: bool = typer.Option(
        False, "--store-dataset", help="Also version --dataset paths as models datasets/NAME."
    ),
    no_code: bool = typer.Option(
        False, "--no-code", help="Do not record the git commit of the working directory."
    ),
    base: str = typer.Option(None, "--base", help="Base model MODEL@REF this was tuned from."),
    tag: list[str] = typer.Option(None, "--tag", "-t", help="Tag the new version."),
    no_parse: bool = typer.Option(False, "--no-parse", help="Store files as opaque bytes."),
    allow_unsafe_pickle: bool = typer.Option(
        False, "--allow-unsafe-pickle", help="Accept pickles that import unknown callables."
    ),
    json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Record files as a new version; prints MODEL@vN, its id, and bytes new vs logical."""
    datasets = _datasets(dataset)
    with common.open_registry() as reg:
        res = reg.commit(
            model,
            list(paths),
            message,
            branch=branch,
            params=common.parse_pairs(param, "--param"),
            metrics=common.parse_pairs(metric, "--metric"),
            datasets=datasets,
            store_datasets=store_dataset,
            detect_code=not no_code,
            base=base,
            tags=tag or [],
            parse=not no_parse,
            allow_unsafe_pickle=allow_unsafe_pickle,
            progress=common.RichProgress(quiet),
        )
    if json_:
        common.emit_json(res.to_json())
        return
    pct = 100 * res.new_bytes / res.logical_bytes if res.logical_bytes else 0.0
    common.say(f"{res.version.ref} {res.version.id}")
    common.say(
        f"  {len(res.version.files)} file(s), {common.human_bytes(res.logical_bytes)} logical, "
        f"{common.human_bytes(res.new_bytes)} new ({pct:.1f}%), "
        f"{res.new_chunks}/{res.total_chunks} chunks new"
    )


def checkout(
    ref: str = typer.Argument(..., help="MODEL@REF to materialize."),
    dest: Path = typer.Argument(None, help="Destination directory (default: ./MODEL)."),
    path: list[str] = typer.Option(None, "--path", help="Only this file or directory."),
    force: bool = typer.Option(
        False, "--force", "-f", help="Replace differing files; remove files tvc did not write."
    ),
    json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Make DEST hold exactly a version's files, every byte hash-verified, atomically.

    Files an earlier checkout wrote that this version lacks are removed; files tvc did not
    write (or that changed since) are kept and named in a warning, or removed with --force.
    """
    if dest is not None:  # checked here for a clear message (the checkout would stop there)
        try:
            is_dir = stat.S_ISDIR(os.stat(dest).st_mode)
        except FileNotFoundError:
            is_dir = True  # made by the checkout
        except OSError as exc:  # too long, a file in the way, a loop, no permission
            raise PathError(f"destination {str(dest)!r}: {exc.strerror}") from None
        except ValueError:  # a NUL byte
            raise PathError(f"destination {str(dest)!r}: not a path") from None
        if not is_dir:
            raise ExistsError(f"destination {str(dest)!r} exists and is not a directory")
    with common.open_registry() as reg:
        res = reg.checkout(
            ref, dest, only=path or None, force=force, progress=common.RichProgress(quiet)
        )
        version = reg.resolve(ref)
    if json_:
        common.emit_json(
            {
                "ref": version.ref,
                "id": version.id,
                "files": [str(p) for p in res],
                "written": [str(p) for p in res.written],
                "unchanged": [str(p) for p in res.unchanged],
                "removed": [str(p) for p in res.removed],
                "kept": [str(p) for p in res.kept],
            }
        )
    else:
        where = res[0].parent if len(res) == 1 else res.dest
        common.say(f"{version.ref}: {len(res)} file(s) in {shown(where)}")
    if res.kept:
        listed = ", ".join(shown(repr(str(p))) for p in res.kept[:5])
        more = f" and {len(res.kept) - 5} more" if len(res.kept) > 5 else ""
        sys.stderr.write(
            f"tvc: warning: kept {len(res.kept)} file(s) that are not {version.ref}'s "
            f"(not written by tvc, or changed since): {listed}{more}; --force removes them\n"
        )


# 128 + SIGPIPE: what a shell reports for `cat` killed writing into a closed pipe.
EXIT_BROKEN_PIPE = 141


def cat(
    ref: str = typer.Argument(..., help="MODEL@REF"),
    path: str = typer.Argument(..., help="File path inside the version."),
) -> None:
    """Write one file of a version to stdout.

    Into a pipe closed early (``| head -c1``): no message, exit 141 as ``cat`` would. Onto a
    full disk: one line and the storage exit code. Either way nothing is left buffered to
    fail again at exit.
    """
    with common.open_registry() as reg:
        version = reg.resolve(ref)
        stream = sys.stdout.buffer
        try:
            for block in reg.iter_file(version, path):
                stream.write(block)
            stream.flush()
        except BrokenPipeError:
            _drop_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except OSError as exc:
            from tvc.store.durable import storage_error

            _drop_stdout()
            raise storage_error(exc, "cannot write to standard output") from None


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the unwritten rest in its buffer cannot fail at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
