"""Search: versions of every model that match a query, as one SQL statement.

The query language is :mod:`tvc.registry.query`; it compiles to a WHERE clause over
``versions ⋈ models`` (JSON values read with type checks inside the SQL, tags and aliases as
``IN`` subqueries on the ``refs`` index), ordered and limited in the database. Versions come back
without their file lists (``show`` has those).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from tvc.errors import UsageError
from tvc.repo import schema as s
from tvc.repo.meta import version_from_row
from tvc.repo.version import Version


class SearchMixin:
    """``search`` for ModelRegistry."""

    def search(
        self,
        text: str = "",
        *,
        model: str | None = None,
        order_by: str | list[str] | None = None,
        limit: int | None = None,
    ) -> list[Version]:
        """Versions matching ``text`` (empty: all), newest first unless ``order_by``.

        ``order_by``: ``KEY`` or ``-KEY`` (descending), or a list of them; KEY is
        ``metrics.NAME``, ``params.NAME``, ``created``, ``version``, ``model``, ``state`` or
        ``author``. Versions lacking a metric or param sort last either way.
        """
        from tvc.registry import query as q  # the language loads with the first search

        query = q.parse(text, source="search")
        states = self.lifecycle_machine().states
        query.check_states(states)
        if limit is not None and limit < 0:
            raise UsageError(f"--limit must be ≥ 0, got {limit}")
        if limit is not None and limit > 2**31 - 1:
            limit = 2**31 - 1  # "all": SQL integers stop there
        keys = [order_by] if isinstance(order_by, str) else list(order_by or [])
        orders = [q.parse_order(k) for k in keys if k.strip()]
        v, mo = s.versions.c, s.models.c
        stmt = (
            sa.select(s.versions, mo.name.label("model_name"))
            .join_from(s.versions, s.models, v.model_id == mo.id)
            .where(q.compile_where(query, states), v.deleted.is_(None))
        )
        with self.meta.read() as conn:
            if model is not None:
                stmt = stmt.where(v.model_id == self.meta.model_id(conn, model))
            terms: list[Any] = []
            for key in orders:
                terms += q.order_clauses(key, states)
            if not orders:
                terms.append(v.created.desc())
            terms += [mo.name.asc(), v.number.desc()]
            stmt = stmt.order_by(*terms)
            if limit:
                stmt = stmt.limit(limit)
            rows = conn.execute(stmt).all()
            parents = self._parents_of(conn, [r.id for r in rows])
        return [version_from_row(r, r.model_name, parents.get(r.id, [])) for r in rows]

    def _parents_of(self, conn: sa.Connection, ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        p = s.version_parents.c
        for i in range(0, len(ids), 500):
            q_ = (
                sa.select(p.version_id, p.parent_id)
                .where(p.version_id.in_(ids[i : i + 500]))
                .order_by(p.version_id, p.position)
            )
            for vid, parent in conn.execute(q_):
                out[vid].append(parent)
        return out

    def refs_of_versions(self, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """(kind, name) of the refs pointing at each of ``ids``, in one query per 500."""
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        r = s.refs.c
        with self.meta.read() as conn:
            for i in range(0, len(ids), 500):
                q_ = (
                    sa.select(r.version_id, r.kind, r.name)
                    .where(r.version_id.in_(ids[i : i + 500]))
                    .order_by(r.kind, r.name)
                )
                for vid, kind, name in conn.execute(q_):
                    out[vid].append((kind, name))
        return out
