"""push, pull, fetch and clone: what travels, in which order, and how a rerun resumes.

Push, for each branch: ask the receiver which of the branch's versions it has recorded; list
the objects of the others (records, manifests, chunks and their delta bases); ask which of
those it lacks, in batches; send exactly those in transfer packs (full entries before deltas,
version records last), each verified and indexed on arrival; then ask it to record the versions
(parents first) and move the branch by compare-and-swap. Pull and fetch are the same with the
sides swapped. Every pack indexed before a kill stays, so running the command again sends only
what is still missing; an upload lease on the receiver keeps gc from taking unindexed packs of
a transfer in progress.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvc.errors import ConflictError, ExistsError, UnknownRefError, UsageError
from tvc.remote import history, objects, record
from tvc.remote.transport import Transport
from tvc.repo import names
from tvc.repo.files import NoProgress
from tvc.repo.meta import default_author
from tvc.store.packs import Kind


@dataclass
class Transfer:
    """What one push, pull, fetch or clone did (``--json``)."""

    direction: str
    remote: str
    versions: int = 0  # versions the receiver recorded
    objects_sent: int = 0  # objects in the packs that travelled
    objects_skipped: int = 0  # objects the receiver had already
    bytes_sent: int = 0  # pack bytes that travelled
    packs: int = 0
    branches: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, int] = field(default_factory=dict)  # events applied / skipped
    # Versions whose number differs between the two sides: {model, id, here, there}.
    renumbered: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _renumbered(model: str, here: dict[str, int], there: dict[str, int]) -> list[dict]:
    return [
        {"model": model, "id": vid, "here": n, "there": there[vid]}
        for vid, n in here.items()
        if vid in there and there[vid] != n
    ]


def _add(total: dict[str, int], more: dict[str, int] | None) -> dict[str, int]:
    for k, n in (more or {}).items():
        total[k] = total.get(k, 0) + n
    return total


def _branch_specs(repo, specs: list[str], all_: bool) -> list[tuple[str, str]]:
    out = []
    if all_ or not specs:
        models = [m["model"] for m in repo.models()] if (all_ or not specs) else []
        for m in models:
            out += [(m, r["name"]) for r in repo.refs_of(m) if r["kind"] == "branch"]
        if not out and not all_:
            raise UsageError("nothing to push: name a model (or --all)")
        return out
    for spec in specs:
        model, _, branch = spec.partition("@")
        names.check_model_name(model)
        out.append((model, names.check_ref_name(branch or names.DEFAULT_BRANCH, "branch")))
    return out


def _deleted_here(repo, vid: str) -> bool:
    """Whether ``vid`` is a version this registry had and deleted (a tombstone)."""
    with repo.meta.read() as conn:
        try:
            return repo.meta.load_version(conn, vid, files=False).deleted is not None
        except UnknownRefError:
            return False


def _local_head(repo, model: str, branch: str) -> str:
    with repo.meta.read() as conn:
        mid = repo.meta.model_id(conn, model)
        head = repo.meta.ref_target(conn, mid, "branch", branch)
    if head is None:
        raise UnknownRefError(f"{model} has no branch {branch!r}")
    return head


PARALLEL = 3  # packs in flight at once, each way


def levels(ids: list[str], level_of) -> list[list[str]]:
    """``ids`` split into the levels that must land one after another: full entries, then
    deltas on them (one level per delta depth), then version records. Within a level packs
    travel in parallel."""
    by: dict[tuple, list[str]] = {}
    for i in ids:
        by.setdefault(level_of(i), []).append(i)
    return [by[k] for k in sorted(by)]


def _parallel(fn, groups: list[list[str]]) -> Iterator[Any]:
    """``fn`` over ``groups`` on PARALLEL threads, results in order; the first error stops
    the rest from starting and is raised once the running ones end."""
    if len(groups) <= 1:
        yield from map(fn, groups)
        return
    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="tvc-transfer") as pool:
        futures = [pool.submit(fn, g) for g in groups]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def _send(repo, remote: Transport, ids: list[str], t: Transfer, progress) -> None:
    rows = objects.with_bases(repo.engine, ids)
    absent = remote.missing(list(rows))
    t.objects_skipped += len(rows) - len(absent)
    if not absent:
        return
    progress.start(f"push to {remote.url}", sum(rows[i].stored_len for i in absent))
    lease = remote.take_lease()

    def one(group: list[str]) -> tuple[list[str], int]:
        name, path, size = objects.write_pack(repo, group, repo.dir / "tmp")
        try:
            remote.put_pack(name, path, lease)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        return group, size

    try:
        for level in levels(absent, lambda i: (rows[i].kind == Kind.VERSION, rows[i].depth)):
            for group, size in _parallel(one, objects.plan_packs(rows, level)):
                t.packs += 1
                t.objects_sent += len(group)
                t.bytes_sent += size
                progress.advance(sum(rows[i].stored_len for i in group))
    finally:
        progress.finish()
        remote.drop_lease(lease)


RESEND_TRIES = 6  # a record refused because the receiver's gc swept objects meanwhile


def push(
    repo,
    remote: Transport,
    specs: list[str] = (),  # type: ignore[assignment]
    *,
    all_: bool = False,
    force: bool = False,
    progress=None,
) -> Transfer:
    """Push ``MODEL[@BRANCH]`` specs (default: every branch of every model)."""
    progress = progress or NoProgress()
    t = Transfer("push", remote.url)
    for model, branch in _branch_specs(repo, list(specs), all_):
        head = _local_head(repo, model, branch)
        rrefs = [r for r in remote.refs([model]) if r["model"] == model]
        rtags = {r["name"] for r in rrefs if r["kind"] == "tag"}
        rhead = next(
            (r["id"] for r in rrefs if r["kind"] == "branch" and r["name"] == branch), None
        )
        entry = {"model": model, "branch": branch, "old": rhead, "new": head}
        if rhead is not None and rhead != head and _deleted_here(repo, rhead):
            # The remote's head was deleted here (tvc rm): the deletion travels first (the
            # remote moves its branch back as this registry did), then what came after it.
            got = remote.record(model, [], history=history.collect(repo, model), force=force)
            t.history = _add(t.history, got.get("history"))
            rhead = next(
                (
                    r["id"]
                    for r in remote.refs([model])
                    if r["model"] == model and r["kind"] == "branch" and r["name"] == branch
                ),
                None,
            )
        if rhead == head:  # no versions to send; alias moves, states, metrics may still be
            got = remote.record(model, [], history=history.collect(repo, model), force=force)
            t.history = _add(t.history, got.get("history"))
            t.branches.append({**entry, "status": "up to date"})
            continue
        if rhead is not None and not force:
            known = record.recorded(repo, [rhead])
            with repo.meta.read() as conn:
                forward = bool(known) and record.is_ancestor(repo, conn, rhead, head)
            if not forward:
                raise ConflictError(
                    f"{model}@{branch} on {remote.url} is at {rhead[:12]}, which your branch "
                    "does not contain: pull (and merge) first, or push --force to overwrite it"
                )
        chain = record.ancestry(repo, [head])
        have = remote.recorded(chain)
        todo = [v for v in chain if v not in have]
        chain_set = set(chain)
        tags = {
            r["name"]: r["id"]
            for r in repo.refs_of(model)
            if r["kind"] == "tag" and r["id"] in chain_set and r["name"] not in rtags
        }
        numbers = {vid: info["number"] for vid, info in record.version_infos(repo, todo).items()}
        for attempt in range(1, RESEND_TRIES + 1):
            try:
                _send(repo, remote, record.objects_of(repo, todo), t, progress)
                got = remote.record(
                    model,
                    todo,
                    numbers=numbers,
                    moves=[[branch, rhead, head]],
                    tags=tags,
                    history=history.collect(repo, model),
                    force=force,
                )
                break
            except ConflictError as exc:
                # The receiver's gc swept objects it had said it holds: ask again, resend.
                if record.RESEND not in str(exc) or attempt == RESEND_TRIES:
                    raise
                time.sleep(0.1 * 2**attempt)  # let the receiver's gc run finish
        t.versions += len(got["new_versions"])
        t.history = _add(t.history, got.get("history"))
        t.renumbered += _renumbered(model, numbers, got["numbers"])
        t.branches.append({**entry, "status": "forced" if force and rhead else "updated"})
    _track(repo, remote, t)
    return t


def _receive(
    repo,
    remote: Transport,
    models: list[str] | None,
    branches: dict[str, list[str]] | None,
    *,
    move: bool,
    force: bool,
    t: Transfer,
    progress,
    lazy: bool = False,
) -> None:
    refs = remote.refs(models)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in refs:
        by_model.setdefault(r["model"], []).append(r)
    if models:
        for m in models:
            if m not in by_model:
                raise UnknownRefError(f"{remote.url} has no model {m!r}")
    for model, mrefs in by_model.items():
        wanted_branches = (branches or {}).get(model)
        heads = {
            r["name"]: r["id"]
            for r in mrefs
            if r["kind"] == "branch" and (not wanted_branches or r["name"] in wanted_branches)
        }
        tags = {r["name"]: r["id"] for r in mrefs if r["kind"] == "tag"}
        chain = remote.ancestry(list(dict.fromkeys([*heads.values(), *tags.values()])))
        have = record.recorded(repo, chain)
        todo = [v for v in chain if v not in have]
        infos = remote.version_infos(todo) if todo else {}
        if todo:
            rows = remote.object_rows(todo)
            if lazy:  # records and manifests only; chunks come when read
                rows = {i: r for i, r in rows.items() if r["kind"] != Kind.CHUNK}
            fetch_objects(repo, remote, rows, t, progress)
        todo.sort(key=lambda v: infos.get(v, {}).get("number", 0))
        moves = []
        local = {r["name"]: r["id"] for r in _local_refs(repo, model)}
        if move:
            for branch, rhead in heads.items():
                cur = local.get(("branch", branch))
                if cur != rhead:
                    moves.append(record.Move(branch, cur, rhead))
        new_tags = {k: v for k, v in tags.items() if ("tag", k) not in local}
        got = record.record_versions(
            repo,
            model,
            todo,
            numbers={v: i["number"] for v, i in infos.items()},
            moves=moves,
            tags=new_tags,
            force=force,
            history=remote.history(model),
            gates=False,
            lazy=lazy,
            actor=default_author(),
        )
        t.versions += len(got.new_versions)
        t.history = _add(t.history, got.history)
        there = {v: i["number"] for v, i in infos.items()}
        t.renumbered += _renumbered(model, got.numbers, there)
        for name, mv in got.branches.items():
            t.branches.append({"model": model, "branch": name, **mv})
        if not move:
            t.branches += [
                {"model": model, "branch": b, "remote": h, "local": local.get(("branch", b))}
                for b, h in heads.items()
            ]


def fetch_objects(repo, remote: Transport, rows: dict[str, dict], t: Transfer, progress) -> None:
    """Get the objects of ``rows`` ({id: {stored_len, base, depth, kind}}) this registry
    lacks, in verified packs, level by level, several at once."""
    need = objects.missing(repo.engine, list(rows))
    t.objects_skipped += len(rows) - len(need)
    if not need:
        return
    sizes = {i: objects.ENTRY.size + rows[i]["stored_len"] for i in need}

    def one(group: list[str]) -> tuple[list[str], objects.Received]:
        name, path = remote.get_pack(group, repo.dir / "tmp")
        return group, objects.receive_pack(repo, path, name, wanted=group)

    progress.start(f"pull from {remote.url}", sum(rows[i]["stored_len"] for i in need))
    try:
        key = {i: (rows[i]["kind"] == Kind.VERSION, rows[i]["depth"]) for i in need}
        for level in levels(need, key.__getitem__):
            for group, got in _parallel(one, _groups(level, sizes)):
                if objects.missing(repo.engine, group):
                    raise ConflictError(
                        f"{remote.url} sent a pack without objects asked for; nothing of them "
                        "was recorded"
                    )
                t.packs += 1
                t.objects_sent += got.objects
                t.bytes_sent += got.bytes
                progress.advance(sum(rows[i]["stored_len"] for i in group))
    finally:
        progress.finish()


def _groups(ids: list[str], sizes: dict[str, int]) -> list[list[str]]:
    groups: list[list[str]] = []
    size = 0
    for i in ids:
        if not groups or size + sizes[i] > objects.PACK_LIMIT:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += sizes[i]
    return groups


def _local_refs(repo, model: str) -> list[dict[str, Any]]:
    try:
        return [{"name": (r["kind"], r["name"]), "id": r["id"]} for r in repo.refs_of(model)]
    except UnknownRefError:
        return []


def _model_specs(specs: list[str]) -> tuple[list[str] | None, dict[str, list[str]] | None]:
    if not specs:
        return None, None
    models: list[str] = []
    branches: dict[str, list[str]] = {}
    for spec in specs:
        model, _, branch = spec.partition("@")
        names.check_model_name(model)
        models.append(model)
        if branch:
            branches.setdefault(model, []).append(names.check_ref_name(branch, "branch"))
    return list(dict.fromkeys(models)), branches


def pull(
    repo, remote: Transport, specs=(), *, force: bool = False, lazy: bool = False, progress=None
) -> Transfer:
    """Fetch ``MODEL[@BRANCH]`` specs (default: everything) and fast-forward local branches
    to the remote's (a diverged branch is a ConflictError naming merge or --force)."""
    t = Transfer("pull", remote.url)
    models, branches = _model_specs(list(specs))
    lazy = lazy or (repo.dir / "lazy.json").exists()  # a lazy clone stays lazy
    _receive(
        repo,
        remote,
        models,
        branches,
        move=True,
        force=force,
        t=t,
        progress=progress or NoProgress(),
        lazy=lazy,
    )
    _track(repo, remote, t)
    return t


def fetch(repo, remote: Transport, specs=(), *, progress=None) -> Transfer:
    """Bring the remote's versions here (addressable by id and number) without moving any
    local branch; the summary lists where the remote's branches are."""
    t = Transfer("fetch", remote.url)
    models, branches = _model_specs(list(specs))
    _receive(
        repo,
        remote,
        models,
        branches,
        move=False,
        force=False,
        t=t,
        progress=progress or NoProgress(),
    )
    _track(repo, remote, t)
    return t


def _track(repo, remote: Transport, t: Transfer) -> None:
    """Keep what the transfer saw of the remote under each name this registry gives its URL
    (:mod:`tvc.remote.tracking`): its branch heads, and its numbers where they differ."""
    from tvc.remote import tracking
    from tvc.remote.config import remotes

    names = [n for n, url in remotes(repo.dir).items() if url.rstrip("/") == remote.url.rstrip("/")]
    models = sorted({b["model"] for b in t.branches} | {r["model"] for r in t.renumbered})
    if names and models:
        refs = remote.refs(models)
        for name in names:
            tracking.update(repo.dir, name, remote.url, refs, t.renumbered)


def clone(
    src: str,
    dest: str | Path,
    *,
    models=(),
    token: str | None = None,
    lazy: bool = False,
    progress=None,
):
    """A new registry at ``dest`` with every version, branch and tag of ``src`` (or of
    ``models``), and ``origin`` pointing at ``src``. Run again on the same ``dest`` after an
    interruption, it goes on where it stopped."""
    from tvc.registry import ModelRegistry
    from tvc.remote.config import add_remote, remotes
    from tvc.remote.transport import is_url, open_transport
    from tvc.repo.repository import REGISTRY_DIR

    dest = Path(dest)
    where = src if is_url(src) else str(Path(src).absolute())
    with open_transport(where, token) as remote:
        remote.refs([])  # reachable, and the token works, before anything is made here
        if (dest / REGISTRY_DIR / "config.toml").exists():
            repo = ModelRegistry(dest)
            if remotes(repo.dir).get("origin") != where:
                repo.close()
                raise ExistsError(f"{dest} is a registry already (not a clone of {src})")
        else:
            repo = ModelRegistry.init(dest)
            add_remote(repo.dir, "origin", where)
            if lazy:
                from tvc.remote.lazy import mark_lazy

                mark_lazy(repo.dir, where)
        try:
            return pull(repo, remote, list(models), lazy=lazy, progress=progress), repo
        except BaseException:
            repo.close()
            raise
