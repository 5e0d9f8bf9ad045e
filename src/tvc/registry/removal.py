"""Deleting versions and models, and the retention rule gc can apply.

Vocabulary
- *removal* (``tvc rm MODEL@REF``, ``tvc rm MODEL``): a version becomes a *tombstone*: its
  record stays (history, parents, audit, and its number, which is never reused) but its files
  are gone from it, so gc reclaims every chunk nothing else uses. Refused for a version that an
  alias or a tag points at, or that is in production, unless ``force`` (then those refs are
  removed too). A branch whose head is removed moves back to the nearest ancestor that stays.
  Every removal is recorded in the audit log (kind ``rm``) and in the journal.
- *retention*: ``gc --keep-last N`` first removes every version that is not among the last N of
  some branch (following first parents from its head) and that nothing protects: a tag, an
  alias, the production state, or being the base model or stored data set of a version kept.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from tvc.errors import ConflictError, UsageError
from tvc.repo import schema as s
from tvc.repo.meta import default_author
from tvc.repo.version import Version

PROTECTED_STATES = ("production",)


class RemovalMixin:
    """``rm``, ``rm_model`` and ``retention`` for ModelRegistry."""

    def rm(self, ref: str, *, force: bool = False, reason: str = "") -> list[Version]:
        """Delete one version (see the module doc); returns it."""
        with self.meta.write() as conn:
            mid = self.meta.lock_model_of(conn, ref)
            v = self.resolve(ref, conn)
            self._remove(conn, mid, [v], force=force, reason=reason)
            return [v]

    def rm_model(self, model: str, *, force: bool = False, reason: str = "") -> list[Version]:
        """Delete a model: every version, branch, tag and alias; returns the versions."""
        with self.meta.write() as conn:
            mid = self.meta.model_id(conn, model)
            self.meta.lock_model(conn, mid)
            v = s.versions.c
            ids = conn.execute(
                sa.select(v.id).where(v.model_id == mid, v.deleted.is_(None)).order_by(v.number)
            ).scalars()
            versions = [self.meta.load_version(conn, vid, files=False) for vid in ids]
            self._remove(conn, mid, versions, force=force, reason=reason)
            for kind, name in conn.execute(
                sa.select(s.refs.c.kind, s.refs.c.name).where(s.refs.c.model_id == mid)
            ).all():
                self.meta.move_ref(conn, mid, kind, name, None, reason=reason or "rm model")
            now = time.time()
            conn.execute(s.models.update().where(s.models.c.id == mid).values(deleted=now))
            self.meta.journal(
                conn,
                {
                    "type": "rm_model",
                    "model": model,
                    "actor": default_author(),
                    "at": now,
                    "reason": reason,
                    "forced": force,
                },
            )
            return versions

    def _remove(
        self,
        conn: sa.Connection,
        mid: int,
        versions: list[Version],
        *,
        force: bool,
        reason: str,
        actor: str | None = None,
    ) -> None:
        actor = actor or default_author()
        doomed = {v.id for v in versions}
        r = s.refs.c
        refs = conn.execute(
            sa.select(r.kind, r.name, r.version_id).where(r.version_id.in_(doomed))
        ).all()
        protected = [f"{k} {n}" for k, n, _vid in refs if k in ("tag", "alias")]
        protected += [f"{v.ref} is {v.state}" for v in versions if v.state in PROTECTED_STATES]
        if protected and not force:
            raise ConflictError(
                f"refusing to delete: {', '.join(protected)} (remove those first, or --force)"
            )
        for kind, name, vid in refs:
            if kind == "branch":
                target = self._surviving_ancestor(conn, vid, doomed)
                self.meta.move_ref(
                    conn,
                    mid,
                    kind,
                    name,
                    target,
                    expected=vid,
                    actor=actor,
                    reason=reason or "rm",
                    record=True,
                )
            else:
                self.meta.move_ref(
                    conn,
                    mid,
                    kind,
                    name,
                    None,
                    expected=vid,
                    actor=actor,
                    reason=reason or "rm",
                    forced=True,
                )
        now = time.time()
        vc = s.versions.c
        for v in versions:
            conn.execute(s.versions.update().where(vc.id == v.id).values(deleted=now))
            conn.execute(s.version_files.delete().where(s.version_files.c.version_id == v.id))
            event = {
                "actor": actor,
                "at": now,
                "reason": reason,
                "forced": bool(protected),
            }
            conn.execute(
                s.ref_events.insert().values(
                    model_id=mid,
                    kind="rm",
                    name=f"v{v.number}",
                    old_version=v.id,
                    new_version=None,
                    rollback=False,
                    **event,
                )
            )
            self.meta.journal(
                conn,
                {
                    "type": "rm_version",
                    "model": v.model,
                    "version": v.id,
                    "number": v.number,
                    **event,
                },
            )

    def _surviving_ancestor(self, conn: sa.Connection, vid: str, doomed: set[str]) -> str | None:
        """The nearest first-parent ancestor of ``vid`` that is neither deleted nor doomed."""
        seen = set()
        while vid is not None and vid not in seen:
            seen.add(vid)
            parents = self.meta.parents(conn, vid)
            vid = parents[0] if parents else None
            if vid is None:
                return None
            v = self.meta.load_version(conn, vid, files=False)
            if v.deleted is None and vid not in doomed:
                return vid
        return None

    # -- retention ----------------------------------------------------------------------------
    def retention(self, keep_last: int) -> list[Version]:
        """The versions ``gc --keep-last N`` would delete (see the module doc)."""
        if keep_last < 1:
            raise UsageError(f"--keep-last must be at least 1, got {keep_last}")
        with self.meta.read() as conn:
            v, r = s.versions.c, s.refs.c
            rows = conn.execute(sa.select(v.id).where(v.deleted.is_(None))).scalars().all()
            versions = {vid: self.meta.load_version(conn, vid, files=False) for vid in rows}
            keep: set[str] = set()
            for kind, vid in conn.execute(sa.select(r.kind, r.version_id)):
                if kind in ("tag", "alias"):
                    keep.add(vid)
                elif kind == "branch":
                    walk, n = vid, 0
                    while walk in versions and n < keep_last:
                        keep.add(walk)
                        parents = versions[walk].parents
                        walk, n = (parents[0] if parents else None), n + 1
            keep |= {vid for vid, ver in versions.items() if ver.state in PROTECTED_STATES}
            frontier = list(keep)
            while frontier:  # what kept versions were made from stays too
                ver = versions.get(frontier.pop())
                if ver is None:
                    continue
                inputs = [ver.base] + [
                    d.get("version_id") for d in ver.datasets.values() if isinstance(d, dict)
                ]
                for dep in inputs:
                    if dep and dep in versions and dep not in keep:
                        keep.add(dep)
                        frontier.append(dep)
        return sorted(
            (ver for vid, ver in versions.items() if vid not in keep),
            key=lambda ver: (ver.model, ver.number),
        )

    def gc(
        self, *, dry_run: bool = False, grace: float | None = None, keep_last: int | None = None
    ) -> dict[str, Any]:
        """Reclaim what no live version uses; with ``keep_last`` apply the retention rule
        first (the removed versions are listed under ``removed``)."""
        removed: list[Version] = []
        if keep_last is not None:
            removed = self.retention(keep_last)
            if removed and not dry_run:
                by_model: dict[str, list[Version]] = {}
                for ver in removed:
                    by_model.setdefault(ver.model, []).append(ver)
                with self.meta.write() as conn:
                    for model, vers in by_model.items():
                        mid = self.meta.model_id(conn, model)
                        self.meta.lock_model(conn, mid)
                        self._remove(
                            conn, mid, vers, force=False, reason=f"gc --keep-last {keep_last}"
                        )
        report = super().gc(dry_run=dry_run, grace=grace)
        report["removed"] = [ver.ref for ver in removed]
        return report
