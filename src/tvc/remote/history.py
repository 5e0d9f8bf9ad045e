"""What travels besides versions: lifecycle transitions with their audit, alias moves with
their history, metrics added after the commit, and deletions (``tvc rm`` of a version, a
deleted branch) — as the events the sender recorded.

The receiver replays the events it lacks (an event is known by its kind, its version or alias
name, its new value and its time), oldest first, each only if it starts where the receiver is:
a transition from the version's current state, an alias move from the alias's current target.
An event that does not (the two sides moved apart) is skipped and reported, never forced over
the receiver's own history. On a push (``gates``) the receiver's lifecycle and gates decide as
for a local command — a transition its lifecycle does not allow, or a move its gate refuses, is
a ConflictError and nothing of the push's history is applied (``--force`` overrides, recorded
as forced); the events are then recorded under the pusher's name with the original actor in the
reason. On a pull or clone the events are taken as the remote recorded them.

Deletions travel as events too. A version deleted on the sender is deleted on the receiver by
the rules of a local ``rm``: one a tag or an alias points at, or in production, refuses the
push unless ``--force``, and stays on a pull (reported as skipped); a branch whose head it was
moves back as it would here. A branch deleted on the sender (and not made again) is deleted on
the receiver only if it still points where it pointed when it was deleted. A whole model's
removal (``rm MODEL``) does not travel: a push has no branch of it left to send.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tvc.errors import ConflictError, UsageError
from tvc.repo import names
from tvc.repo import schema as s


def collect(repo, model: str) -> list[dict[str, Any]]:
    """Every state, alias and metric event of ``model``, oldest first."""
    out: list[dict[str, Any]] = []
    with repo.meta.read() as conn:
        mid = conn.execute(
            sa.select(s.models.c.id).where(s.models.c.name == model, s.models.c.deleted.is_(None))
        ).scalar()
        if mid is None:
            return []
        se, re_, me = s.state_events.c, s.ref_events.c, s.metric_events.c
        for r in conn.execute(sa.select(s.state_events).where(se.model_id == mid)):
            out.append(
                {
                    "type": "state",
                    "version": r.version_id,
                    "old": r.old_state,
                    "new": r.new_state,
                    "actor": r.actor,
                    "at": r.at,
                    "reason": r.reason,
                    "forced": r.forced,
                    "overridden": r.overridden,
                }
            )
        q = sa.select(s.ref_events).where(re_.model_id == mid, re_.kind == "alias")
        for r in conn.execute(q.order_by(re_.id)):
            out.append(
                {
                    "type": "alias",
                    "name": r.name,
                    "old": r.old_version,
                    "new": r.new_version,
                    "actor": r.actor,
                    "at": r.at,
                    "reason": r.reason,
                    "forced": r.forced,
                    "rollback": r.rollback,
                }
            )
        # Deletions: versions removed (``tvc rm``), and branches deleted that do not exist
        # now (a branch deleted and made again is not a deletion any more).
        live = {
            r[0]
            for r in conn.execute(
                sa.select(s.refs.c.name).where(s.refs.c.model_id == mid, s.refs.c.kind == "branch")
            )
        }
        q = sa.select(s.ref_events).where(re_.model_id == mid, re_.kind.in_(["rm", "branch"]))
        for r in conn.execute(q.order_by(re_.id)):
            if r.kind == "rm":
                event = {"type": "rm", "version": r.old_version}
            elif r.new_version is None and r.old_version and r.name not in live:
                event = {"type": "branch", "name": r.name, "old": r.old_version, "new": None}
            else:
                continue
            out.append(
                {**event, "actor": r.actor, "at": r.at, "reason": r.reason, "forced": r.forced}
            )
        for r in conn.execute(sa.select(s.metric_events).where(me.model_id == mid)):
            out.append(
                {
                    "type": "metrics",
                    "version": r.version_id,
                    "metrics": r.metrics,
                    "previous": r.previous,
                    "actor": r.actor,
                    "at": r.at,
                    "reason": r.reason,
                }
            )
    return sorted(out, key=lambda e: e["at"])


_FIELDS = {
    "state": {"version": str, "old": str, "new": str},
    "alias": {"name": str, "old": (str, type(None)), "new": (str, type(None))},
    "metrics": {"version": str, "metrics": dict},
    "rm": {"version": str},
    "branch": {"name": str, "old": str},
}


def _check(e: Any) -> None:
    """An event from the other side has the fields and types its kind needs, or UsageError."""
    ok = isinstance(e, dict) and e.get("type") in _FIELDS
    ok = ok and isinstance(e.get("at"), int | float) and isinstance(e.get("actor"), str)
    ok = ok and isinstance(e.get("reason") or "", str)
    if ok:
        ok = all(isinstance(e.get(k), t) for k, t in _FIELDS[e["type"]].items())
    if not ok:
        raise UsageError(f"malformed history event {str(e)[:200]}")
    if e["type"] in ("alias", "branch"):
        names.check_ref_name(e["name"], e["type"])


def _known(conn: sa.Connection, mid: int, e: dict[str, Any]) -> bool:
    if e["type"] == "rm":  # deleted here already, or never here: nothing to do
        v = s.versions.c
        row = conn.execute(sa.select(v.deleted).where(v.id == e["version"])).first()
        return row is None or row.deleted is not None
    if e["type"] == "branch":
        r = s.refs.c
        q = sa.select(r.version_id).where(
            r.model_id == mid, r.kind == "branch", r.name == e["name"]
        )
        return conn.execute(q).first() is None
    if e["type"] == "state":
        c = s.state_events.c
        q = sa.select(c.id).where(
            c.version_id == e["version"], c.new_state == e["new"], c.at == e["at"]
        )
    elif e["type"] == "alias":
        c = s.ref_events.c
        q = sa.select(c.id).where(
            c.model_id == mid, c.kind == "alias", c.name == e["name"], c.at == e["at"]
        )
    else:
        c = s.metric_events.c
        q = sa.select(c.id).where(c.version_id == e["version"], c.at == e["at"])
    return conn.execute(q).first() is not None


def apply(
    repo,
    conn: sa.Connection,
    mid: int,
    model: str,
    events: list[dict[str, Any]],
    *,
    gates: bool,
    force: bool,
    actor: str,
) -> dict[str, int]:
    """Replay ``events`` inside the caller's transaction; returns counts (applied, skipped)."""
    for e in events:
        _check(e)
    v = s.versions.c
    applied = skipped = 0
    for e in sorted(events, key=lambda e: e["at"]):
        if _known(conn, mid, e):
            continue
        who, reason = e["actor"], e.get("reason") or ""
        if gates:
            who, reason = actor, f"{reason} (by {e['actor']}, pushed)".strip()
        if e["type"] == "rm":
            # Deleted there, so deleted here — by the rules of a local rm: a version a tag or
            # an alias points at, or in production, is refused on a push unless --force, and
            # kept (skipped) on a pull.
            version = repo.meta.load_version(conn, e["version"], files=False)
            try:
                repo._remove(conn, mid, [version], force=force, reason=reason, actor=who)
            except ConflictError:
                if gates:
                    raise
                skipped += 1
                continue
        elif e["type"] == "branch":
            cur = repo.meta.ref_target(conn, mid, "branch", e["name"])
            if cur != e["old"]:  # it moved on here since: not the branch that was deleted
                skipped += 1
                continue
            repo.meta.move_ref(
                conn, mid, "branch", e["name"], None, expected=cur, actor=who, reason=reason
            )
        elif e["type"] == "state":
            row = conn.execute(sa.select(v.state).where(v.id == e["version"])).first()
            if row is None or row.state != e["old"]:
                skipped += 1
                continue
            forced, overridden = bool(e.get("forced")), e.get("overridden")
            if gates:
                version = repo.meta.load_version(conn, e["version"], files=False)
                lc = repo.lifecycle_machine()
                problems = []
                if e["new"] not in lc.allowed(row.state):
                    problems.append(f"illegal transition {row.state} → {e['new']}")
                failures = repo._gate_failures(conn, e["new"], version)
                if failures:
                    problems.append(repo._gate_message(f"state {e['new']}", version, failures))
                if problems and not force:
                    raise ConflictError(f"{version.ref}: " + "; ".join(problems))
                forced, overridden = bool(problems), "; ".join(problems) or None
            conn.execute(s.versions.update().where(v.id == e["version"]).values(state=e["new"]))
            repo.meta.record_state(
                conn,
                mid,
                e["version"],
                old_state=e["old"],
                new_state=e["new"],
                actor=who,
                at=e["at"],
                reason=reason,
                forced=forced,
                overridden=overridden,
            )
        elif e["type"] == "alias":
            cur = repo.meta.ref_target(conn, mid, "alias", e["name"])
            new = e["new"]
            if cur != e["old"] or (
                new is not None and conn.execute(sa.select(v.id).where(v.id == new)).first() is None
            ):
                skipped += 1
                continue
            forced = bool(e.get("forced"))
            if gates and new is not None:
                version = repo.meta.load_version(conn, new, files=False)
                failures = repo._gate_failures(conn, e["name"], version)
                if failures and not force:
                    raise ConflictError(repo._gate_message(f"alias {e['name']}", version, failures))
                forced = bool(failures)
            _move_alias(repo, conn, mid, model, e, who, reason, forced)
        else:
            row = conn.execute(sa.select(v.extra_metrics).where(v.id == e["version"])).first()
            if row is None:
                skipped += 1
                continue
            extra = {**(row.extra_metrics or {}), **e["metrics"]}
            conn.execute(
                s.versions.update().where(v.id == e["version"]).values(extra_metrics=extra)
            )
            repo.meta.record_metrics(
                conn,
                mid,
                e["version"],
                metrics=e["metrics"],
                previous=e.get("previous") or {},
                actor=who,
                at=e["at"],
                reason=reason,
            )
        applied += 1
    return {"applied": applied, "skipped": skipped}


def _move_alias(repo, conn, mid, model, e, who, reason, forced) -> None:
    """The alias move as it happened (its time included, so it is known on the next sync):
    compare-and-swap on the ref, the audited row, the journal event."""
    r = s.refs.c
    where = (r.model_id == mid, r.kind == "alias", r.name == e["name"])
    if e["old"] is None:
        conn.execute(
            s.refs.insert().values(model_id=mid, kind="alias", name=e["name"], version_id=e["new"])
        )
    elif e["new"] is None:
        conn.execute(s.refs.delete().where(*where, r.version_id == e["old"]))
    else:
        conn.execute(
            s.refs.update().where(*where, r.version_id == e["old"]).values(version_id=e["new"])
        )
    row = {
        "kind": "alias",
        "name": e["name"],
        "old_version": e["old"],
        "new_version": e["new"],
        "actor": who,
        "at": e["at"],
        "reason": reason,
        "forced": forced,
        "rollback": bool(e.get("rollback")),
    }
    conn.execute(s.ref_events.insert().values(model_id=mid, **row))
    repo.meta.journal(
        conn,
        {
            "type": "ref",
            "model": model,
            "kind": "alias",
            "name": e["name"],
            "old": e["old"],
            "new": e["new"],
            "actor": who,
            "at": e["at"],
            "reason": reason,
            "forced": forced,
            "rollback": bool(e.get("rollback")),
            "record": True,
        },
    )
