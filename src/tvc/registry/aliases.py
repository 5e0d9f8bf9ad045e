"""Aliases: names moved by hand (``production``, ``staging``) with every move recorded.

Vocabulary
- *alias*: a ref of kind ``alias``; ``MODEL@ALIAS`` resolves like a branch or tag.
- *move*: setting, removing or rolling back an alias; each is a row of ``ref_events`` (who,
  when, from, to, why, forced, rollback).
- *rollback*: moving an alias back to its previous target. The history of targets behaves like
  a stack: a move pushes its target, a rollback pops back to the target before the current one,
  so repeated rollbacks walk further back (v1 → v2 → v3, rollback → v2, rollback → v1), like
  "undo". ``rollback --to REF`` pops back to REF if it is in that history, else pushes it.
  A removed alias rolls back to the target it had. Rollbacks are checked against gates too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tvc.errors import ConflictError, ExistsError, UnknownRefError, UsageError
from tvc.repo import names
from tvc.repo import schema as s
from tvc.repo.meta import default_author
from tvc.repo.version import Version, iso


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias. ``old``/``new`` are ``MODEL@vN`` (None: unset / removed)."""

    model: str
    alias: str
    old: str | None
    new: str | None
    old_id: str | None
    new_id: str | None
    actor: str
    at: float
    reason: str
    forced: bool
    rollback: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.alias,
            "from": self.old,
            "to": self.new,
            "from_id": self.old_id,
            "to_id": self.new_id,
            "actor": self.actor,
            "at": iso(self.at),
            "reason": self.reason,
            "forced": self.forced,
            "rollback": self.rollback,
        }


def _replay(events: list[tuple[str | None, bool]]) -> list[str | None]:
    """The stack of targets after ``events`` ((new target, is rollback), oldest first)."""
    stack: list[str | None] = []
    for new, is_rollback in events:
        if is_rollback and new is not None and new in stack:
            while stack[-1] != new:
                stack.pop()
        elif not stack or stack[-1] != new:
            stack.append(new)
    return stack


class AliasesMixin:
    """``alias`` (= ``set_alias``), ``aliases``, ``alias_history``, ``remove_alias``,
    ``rollback`` for ModelRegistry."""

    def _alias_ref(self, model: str, ref: str) -> str:
        if "@" in ref:
            if names.parse_ref(ref).model != model:
                raise UsageError(f"alias of {model} cannot point at {ref} (another model)")
            return ref
        return f"{model}@{ref}"

    def _move_alias(
        self,
        conn: sa.Connection,
        mid: int,
        model: str,
        alias: str,
        target: Version | None,
        *,
        reason: str,
        force: bool,
        rollback: bool,
    ) -> AliasEvent | None:
        self.meta.lock_model(conn, mid)
        old = self.meta.ref_target(conn, mid, "alias", alias)
        new = target.id if target else None
        if old == new:
            return None
        forced = False
        if target is not None:
            failures = self._gate_failures(conn, alias, target)
            if failures:
                if not force:
                    raise ConflictError(self._gate_message(f"alias {alias}", target, failures))
                forced = True
        self.meta.move_ref(
            conn,
            mid,
            "alias",
            alias,
            new,
            expected=old,
            actor=default_author(),
            reason=reason,
            forced=forced,
            rollback=rollback,
        )
        e = s.ref_events.c
        row = conn.execute(
            sa.select(s.ref_events)
            .where(e.model_id == mid, e.kind == "alias", e.name == alias)
            .order_by(e.id.desc())
            .limit(1)
        ).one()
        return self._alias_event(model, alias, row, self._refs_for(conn, {old, new}))

    @staticmethod
    def _alias_event(model: str, alias: str, row: Any, refs: dict[str, str]) -> AliasEvent:
        return AliasEvent(
            model=model,
            alias=alias,
            old=refs.get(row.old_version) if row.old_version else None,
            new=refs.get(row.new_version) if row.new_version else None,
            old_id=row.old_version,
            new_id=row.new_version,
            actor=row.actor,
            at=row.at,
            reason=row.reason,
            forced=bool(row.forced),
            rollback=bool(row.rollback),
        )

    def set_alias(
        self, model: str, alias: str, ref: str, *, reason: str = "", force: bool = False
    ) -> AliasEvent | None:
        """Point ``alias`` of ``model`` at ``ref`` (``v3``, ``main``, ``MODEL@v3``…).

        Returns the recorded move, or None if it already pointed there. A gate of the alias's
        name (config.toml ``[gates]``) must pass unless ``force``; a forced move is recorded so.
        """
        names.check_ref_name(alias, "alias")
        with self.meta.write() as conn:
            mid = self.meta.model_id(conn, model)
            for kind in ("branch", "tag"):
                if self.meta.ref_target(conn, mid, kind, alias):
                    raise ExistsError(
                        f"{model} has a {kind} named {alias!r}; an alias of that name would make "
                        f"{model}@{alias} ambiguous"
                    )
            target = self.resolve(self._alias_ref(model, ref), conn)
            return self._move_alias(
                conn, mid, model, alias, target, reason=reason, force=force, rollback=False
            )

    alias = set_alias  # the API name in DESIGN.md: reg.alias(model, name, ref)

    def remove_alias(self, model: str, alias: str, *, reason: str = "") -> AliasEvent:
        """Delete an alias (recorded; ``rollback`` brings it back)."""
        with self.meta.write() as conn:
            mid = self.meta.model_id(conn, model)
            if not self.meta.ref_target(conn, mid, "alias", alias):
                raise UnknownRefError(f"{model} has no alias {alias!r}")
            event = self._move_alias(
                conn, mid, model, alias, None, reason=reason, force=False, rollback=False
            )
            assert event is not None
            return event

    def aliases(self, model: str) -> list[dict[str, Any]]:
        """Current aliases of a model: name, version, id, and the last move (when, who, why)."""
        with self.meta.read() as conn:
            return alias_rows(conn, self.meta.model_id(conn, model), model)

    def alias_history(self, model: str, alias: str) -> list[AliasEvent]:
        """Every move of one alias, oldest first."""
        with self.meta.read() as conn:
            mid = self.meta.model_id(conn, model)
            rows = self._alias_rows(conn, mid, alias)
            refs = self._refs_for(
                conn, {x for row in rows for x in (row.old_version, row.new_version)}
            )
        if not rows:
            raise UnknownRefError(f"{model} has no alias {alias!r} and never had one")
        return [self._alias_event(model, alias, row, refs) for row in rows]

    def _alias_rows(self, conn: sa.Connection, mid: int, alias: str) -> list[Any]:
        e = s.ref_events.c
        q = (
            sa.select(s.ref_events)
            .where(e.model_id == mid, e.kind == "alias", e.name == alias)
            .order_by(e.id)
        )
        return conn.execute(q).all()

    def _refs_for(self, conn: sa.Connection, ids: set[str | None]) -> dict[str, str]:
        v, mo = s.versions.c, s.models.c
        wanted = [i for i in ids if i]
        if not wanted:
            return {}
        q = (
            sa.select(v.id, mo.name, v.number)
            .join_from(s.versions, s.models, v.model_id == mo.id)
            .where(v.id.in_(wanted))
        )
        return {vid: f"{name}@v{n}" for vid, name, n in conn.execute(q)}

    def rollback(
        self,
        model: str,
        alias: str,
        *,
        to: str | None = None,
        reason: str = "",
        force: bool = False,
    ) -> AliasEvent:
        """Move ``alias`` back to its previous target (or to ``to``); see the module doc."""
        with self.meta.write() as conn:
            mid = self.meta.model_id(conn, model)
            rows = self._alias_rows(conn, mid, alias)
            if not rows:
                raise UnknownRefError(f"{model} has no alias {alias!r} and never had one")
            stack = _replay([(row.new_version, bool(row.rollback)) for row in rows])
            current = self.meta.ref_target(conn, mid, "alias", alias)
            if to is not None:
                target = self.resolve(self._alias_ref(model, to), conn)
                if target.id == current:
                    raise ConflictError(f"{model}@{alias} already points at {target.ref}")
            else:
                rest = stack[:-1]
                while rest and (rest[-1] is None or rest[-1] == current):
                    rest.pop()
                if not rest:
                    raise ConflictError(
                        f"{model}@{alias} has no earlier target to roll back to "
                        f"(history: tvc alias history {model} {alias})"
                    )
                target = self.meta.load_version(conn, rest[-1], files=False)
            event = self._move_alias(
                conn, mid, model, alias, target, reason=reason, force=force, rollback=True
            )
            assert event is not None
            return event


def alias_rows(conn: sa.Connection, mid: int, model: str) -> list[dict[str, Any]]:
    """:meth:`AliasesMixin.aliases` in one statement, inside a caller's read transaction."""
    return ref_rows(conn, mid, model)[0]


def ref_rows(
    conn: sa.Connection, mid: int, model: str, versions: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, str]]]]:
    """``(aliases, refs)``: the model's aliases as :meth:`AliasesMixin.aliases` gives them,
    each joined to its last move, and the refs ``(kind, name)`` pointing at each of
    ``versions`` — one statement, however many aliases, tags or versions."""
    r, v = s.refs.c, s.versions.c
    e = s.ref_events.c
    last = (
        sa.select(e.name, sa.func.max(e.id).label("last"))
        .where(e.model_id == mid, e.kind == "alias")
        .group_by(e.name)
        .subquery()
    )
    ev = s.ref_events.alias("ev")
    wanted = r.kind == "alias"
    if versions:
        wanted = sa.or_(wanted, r.version_id.in_(list(versions)))
    rows = conn.execute(
        sa.select(
            r.kind,
            r.name,
            r.version_id,
            v.number,
            v.state,
            ev.c.actor,
            ev.c.at,
            ev.c.reason,
            ev.c.forced,
            ev.c.id,
        )
        .join_from(s.refs, s.versions, r.version_id == v.id)
        .outerjoin(last, sa.and_(r.kind == "alias", last.c.name == r.name))
        .outerjoin(ev, ev.c.id == last.c.last)
        .where(r.model_id == mid, wanted)
        .order_by(r.kind, r.name)
    ).all()
    aliases = []
    pointing: dict[str, list[tuple[str, str]]] = {}
    chosen = set(versions)
    for kind, name, vid, number, state, actor, at, reason, forced, ev_id in rows:
        if vid in chosen:
            pointing.setdefault(vid, []).append((kind, name))
        if kind != "alias":
            continue
        seen = ev_id is not None
        aliases.append(
            {
                "alias": name,
                "version": f"v{number}",
                "ref": f"{model}@v{number}",
                "id": vid,
                "state": state,
                "since": iso(at) if seen else None,
                "actor": actor if seen else None,
                "reason": reason if seen else None,
                "forced": bool(forced) if seen else False,
            }
        )
    return aliases, pointing
