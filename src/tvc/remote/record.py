"""Versions on the move: which objects a version needs, and how a receiver records versions it
was sent and moves a branch — the same code whether the sender is a client pushing to a server,
a server answering a pull, or another registry directory.

Numbers. A version keeps its id everywhere; its number ``vN`` is the receiving registry's. The
receiver keeps the sender's number when it is free there and above every number it has given
out (so a clone, and a push to a registry nobody else pushed to, show the same ``vN`` as the
sender); otherwise the version takes the next number of the receiver's own sequence. A number
once given never changes inside one registry, so ``MODEL@vN`` never silently changes meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tvc.errors import ConflictError, IntegrityError, UsageError
from tvc.remote import history as events
from tvc.remote.objects import RESEND, object_rows, with_bases
from tvc.repo import names, paths
from tvc.repo import schema as s
from tvc.repo.manifest import Manifest
from tvc.repo.version import FileEntry, parse_version_record
from tvc.store.packs import Kind


def ancestry(repo, heads: Iterable[str]) -> list[str]:
    """Every version reachable from ``heads`` through parents, parents before children."""
    order: list[str] = []
    seen: set[str] = set()
    with repo.meta.read() as conn:
        for head in heads:
            stack: list[tuple[str, bool]] = [(head, False)]
            while stack:
                vid, done = stack.pop()
                if done:
                    order.append(vid)
                    continue
                if vid in seen:
                    continue
                seen.add(vid)
                stack.append((vid, True))
                for p in reversed(repo.meta.parents(conn, vid)):
                    if p not in seen:
                        stack.append((p, False))
    return order


def is_ancestor(repo, conn: sa.Connection, old: str, new: str) -> bool:
    """Whether ``old`` is ``new`` or one of its ancestors (a fast-forward from old to new)."""
    stack, seen = [new], set()
    while stack:
        vid = stack.pop()
        if vid == old:
            return True
        if vid in seen:
            continue
        seen.add(vid)
        stack.extend(repo.meta.parents(conn, vid))
    return False


def recorded(repo, vids: Iterable[str]) -> set[str]:
    """The versions among ``vids`` this registry has recorded (and not deleted)."""
    wanted = list(dict.fromkeys(vids))
    v = s.versions.c
    out: set[str] = set()
    with repo.meta.read() as conn:
        for i in range(0, len(wanted), 500):
            q = sa.select(v.id).where(v.id.in_(wanted[i : i + 500]), v.deleted.is_(None))
            out.update(r[0] for r in conn.execute(q))
    return out


def objects_of(repo, vids: Iterable[str]) -> list[str]:
    """The objects these versions use: records, manifests, chunks (bases are the caller's)."""
    out: dict[str, None] = {}
    for vid in vids:
        version = repo.version(vid)
        out[vid] = None
        for fe in version.files:
            out[fe.manifest_id] = None
            out.update((cid, None) for cid, _n in repo.manifest(fe.manifest_id).chunks)
    return list(out)


def version_infos(repo, vids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Number and model of each version (the numbering a clone shows)."""
    wanted = list(dict.fromkeys(vids))
    v, mo = s.versions.c, s.models.c
    out: dict[str, dict[str, Any]] = {}
    with repo.meta.read() as conn:
        for i in range(0, len(wanted), 500):
            q = (
                sa.select(v.id, v.number, mo.name, v.state)
                .join_from(s.versions, s.models, v.model_id == mo.id)
                .where(v.id.in_(wanted[i : i + 500]), v.deleted.is_(None))
            )
            for vid, number, model, state in conn.execute(q):
                out[vid] = {"number": number, "model": model, "state": state}
    return out


def list_refs(repo, models: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every branch and tag (with its target's number) of ``models`` (default: all models)."""
    r, mo, v = s.refs.c, s.models.c, s.versions.c
    q = (
        sa.select(mo.name, r.kind, r.name, r.version_id, v.number)
        .join_from(s.refs, s.models, r.model_id == mo.id)
        .join(s.versions, v.id == r.version_id)
        .where(mo.deleted.is_(None), r.kind.in_(["branch", "tag"]))
        .order_by(mo.name, r.kind, r.name)
    )
    wanted = set(models) if models is not None else None
    with repo.meta.read() as conn:
        return [
            {"model": m, "kind": k, "name": n, "id": vid, "number": num}
            for m, k, n, vid, num in conn.execute(q)
            if wanted is None or m in wanted
        ]


@dataclass
class Recorded:
    model: str
    new_versions: list[str]  # ids recorded by this call, in order
    numbers: dict[str, int]  # id -> number here, for every version of the call
    branches: dict[str, dict[str, str | None]]  # name -> {"old", "new"}
    tags: list[str]  # tags created
    history: dict[str, int] | None = None  # events applied / skipped

    def to_json(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "model": self.model,
            "new_versions": self.new_versions,
            "numbers": self.numbers,
            "branches": self.branches,
            "tags": self.tags,
        }


@dataclass(frozen=True)
class Move:
    """Move ``branch`` from ``expected`` (None: must not exist) to ``head``."""

    branch: str
    expected: str | None
    head: str


def _plan(
    repo, model: str, versions: list[str], lazy: bool = False
) -> list[tuple[str, dict, list, set[str]]]:
    """What recording each version needs; ``lazy`` (a lazy clone): only its records and
    manifests must be here, its chunks come when they are read."""
    plans = []
    have = recorded(repo, versions)
    for vid in versions:
        if vid in have:
            continue
        row = object_rows(repo.engine, [vid]).get(vid)
        if row is not None and row.kind != Kind.VERSION:
            raise UsageError(f"object {vid[:12]} is not a version record")
        try:
            doc = parse_version_record(repo.store.read_record(vid))
        except IntegrityError as exc:
            raise ConflictError(f"version {vid[:12]} cannot be recorded: {exc}; {RESEND}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"object {vid[:12]} is not a version record ({exc})") from exc
        if doc["model"] != model:
            raise UsageError(f"version {vid[:12]} belongs to {doc['model']}, not {model}")
        entries = []
        wanted: set[str] = {vid}
        for path, mid in doc["files"]:
            paths.check_stored_path(path)  # a hostile record naming ../ or / is refused here
            try:
                m = Manifest.from_canonical(repo.store.read_record(mid), mid)
            except IntegrityError as exc:
                raise ConflictError(
                    f"version {vid[:12]}: manifest {mid[:12]}: {exc}; {RESEND}"
                ) from exc
            entries.append((FileEntry(path, m.size, m.digest, m.format, mid), m))
            wanted.add(mid)
            if not lazy:
                wanted.update(cid for cid, _n in m.chunks)
        # Delta bases must stay too: claimed in the same transaction as the rest.
        wanted.update(r.base for r in with_bases(repo.engine, wanted).values() if r.base)
        plans.append((vid, doc, entries, wanted))
    return plans


def _branch_of(plans, moves: list[Move]) -> dict[str, str]:
    """For the journal: a branch each new version is on (the first move whose head reaches
    it), so a rebuild numbers it as a commit; the moves' own events set the final heads."""
    parents = {vid: doc["parents"] for vid, doc, _e, _w in plans}
    out: dict[str, str] = {}
    for mv in moves:
        stack = [mv.head]
        while stack:
            vid = stack.pop()
            if vid in out or vid not in parents:
                continue
            out[vid] = mv.branch
            stack.extend(parents[vid])
    return out


def record_versions(
    repo,
    model: str,
    versions: list[str],
    *,
    numbers: dict[str, int] | None = None,
    moves: list[Move] = (),  # type: ignore[assignment]
    tags: dict[str, str] | None = None,
    force: bool = False,
    history: list[dict[str, Any]] | None = None,
    gates: bool = True,
    lazy: bool = False,
    actor: str,
) -> Recorded:
    """Record ``versions`` (parents first; their objects already indexed here), move branches
    by compare-and-swap, create tags (name -> version id) and replay ``history`` (see
    :mod:`tvc.remote.history`; ``gates``: the receiver's lifecycle and gates decide) — all in
    one transaction.

    The receiver reads each version from its own store (the record it verified), never from
    the sender's say-so. A branch that moved meanwhile, or a move that is not a fast-forward
    without ``force``, is a ConflictError and records nothing.
    """
    names.check_model_name(model)
    for mv in moves:
        names.check_ref_name(mv.branch, "branch")
    for tag in tags or {}:
        names.check_ref_name(tag, "tag")
    numbers = numbers or {}
    plans = _plan(repo, model, versions, lazy)
    on_branch = _branch_of(plans, list(moves))
    v, mo = s.versions.c, s.models.c
    with repo.meta.write() as conn:
        mid_ = repo.meta.model_id(conn, model, create=True)
        repo.meta.lock_model(conn, mid_)
        for mv in moves:
            cur = repo.meta.ref_target(conn, mid_, "branch", mv.branch)
            if cur != mv.expected:
                raise ConflictError(
                    f"branch {mv.branch} of {model} moved meanwhile (it is at "
                    f"{cur[:12] if cur else 'nothing'}); fetch or pull, then push again"
                )
        new_versions: list[str] = []
        for vid, doc, entries, wanted in plans:
            if conn.execute(sa.select(v.id).where(v.id == vid)).first() is not None:
                continue  # recorded meanwhile by a concurrent push of the same version
            for p in doc["parents"]:
                if conn.execute(sa.select(v.id).where(v.id == p)).first() is None:
                    raise ConflictError(
                        f"version {vid[:12]}: its parent {p[:12]} is not here; send it first"
                    )
            gone = repo.store.claim(conn, wanted)
            if gone:
                raise ConflictError(
                    f"version {vid[:12]}: {len(gone)} of its objects are not here (e.g. "
                    f"{sorted(gone)[0][:12]}); {RESEND}"
                )
            repo.meta.keep_manifests(conn, [m for _fe, m in entries])
            hint = numbers.get(vid)
            last = conn.execute(sa.select(mo.last_number).where(mo.id == mid_)).scalar_one()
            if isinstance(hint, int) and hint > last:
                conn.execute(s.models.update().where(mo.id == mid_).values(last_number=hint))
                number = hint
            else:
                number = repo.meta.take_number(conn, mid_)
            files = [fe for fe, _m in entries]
            meta = {k: doc[k] for k in ("message", "author", "created", "params", "metrics")}
            meta.update(datasets=doc["datasets"], code=doc["code"], base=doc["base"])
            repo.meta.insert_version(
                conn,
                vid=vid,
                mid=mid_,
                number=number,
                state="created",
                size=sum(fe.size for fe in files),
                parents=list(doc["parents"]),
                files=files,
                meta=meta,
            )
            branch = on_branch.get(vid)
            event = {
                "type": "commit" if branch else "fetched",
                "model": model,
                "version": vid,
                "number": number,
                "branch": branch,
                "parent": doc["parents"][0] if doc["parents"] else None,
                "state": "created",
                "actor": actor,
            }
            repo.meta.journal(conn, event)
            new_versions.append(vid)
        out_numbers = {}
        for vid in versions:
            n = conn.execute(sa.select(v.number).where(v.id == vid)).scalar()
            if n is not None:
                out_numbers[vid] = n
        # The events before the branch moves: a deletion there may have moved a branch back
        # here already (to where the move goes).
        done = None
        if history:
            try:
                done = events.apply(
                    repo, conn, mid_, model, history, gates=gates, force=force, actor=actor
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise UsageError(f"malformed history event ({exc!r})") from exc
        branches: dict[str, dict[str, str | None]] = {}
        for mv in moves:
            cur = repo.meta.ref_target(conn, mid_, "branch", mv.branch)
            if mv.head == cur:
                continue
            if conn.execute(sa.select(v.id).where(v.id == mv.head)).first() is None:
                raise ConflictError(f"version {mv.head[:12]} is not here; send it first")
            forward = cur is None or is_ancestor(repo, conn, cur, mv.head)
            if not forward and not force:
                raise ConflictError(
                    f"{model}@{mv.branch}: not a fast-forward (it is at {cur[:12]}, which "
                    f"{mv.head[:12]} does not descend from): bring both sides together first "
                    "(pull, then tvc merge, then push), or use --force to overwrite it"
                )
            repo.meta.move_ref(
                conn,
                mid_,
                "branch",
                mv.branch,
                mv.head,
                expected=cur,
                actor=actor,
                forced=not forward,
                reason="forced push" if not forward else "push",
                record=not forward or cur is None,
            )
            branches[mv.branch] = {"old": cur, "new": mv.head}
        created = []
        for tag, vid in (tags or {}).items():
            cur = repo.meta.ref_target(conn, mid_, "tag", tag)
            if cur == vid:
                continue
            if cur is not None:
                raise ConflictError(
                    f"tag {tag} of {model} points at {cur[:12]} here, not {vid[:12]} "
                    "(tags never move)"
                )
            repo.meta.create_ref(conn, mid_, "tag", tag, vid, actor=actor, reason="push")
            created.append(tag)
    return Recorded(model, new_versions, out_numbers, branches, created, done)
