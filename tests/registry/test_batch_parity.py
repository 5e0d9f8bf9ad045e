"""The batched reads (audit in SQL, lineage by recursive CTE, aliases in one query) return
exactly what the per-row code they replaced returned — on SQLite and on PostgreSQL.

The per-row code is kept here, verbatim in substance, as the oracle: the audit log merged and
sorted in Python, the lineage walked one ``load_version`` at a time, each alias's last move read
by its own query.
"""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvc.registry import batch
from tvc.registry.lineage import _version_node
from tvc.repo import schema as s
from tvc.repo.version import iso


# -- the oracles: the per-row code -------------------------------------------------------------
def old_audit(reg, model=None):
    with reg.meta.read() as conn:
        mid = reg.meta.model_id(conn, model) if model is not None else None
        v, mo = s.versions.c, s.models.c
        q = sa.select(v.id, mo.name, v.number).join_from(s.versions, s.models, v.model_id == mo.id)
        if mid is not None:
            q = q.where(v.model_id == mid)
        refs = {vid: f"{name}@v{n}" for vid, name, n in conn.execute(q)}
        names = dict(conn.execute(sa.select(mo.id, mo.name)).all())
        out = []

        def where(t):
            q = sa.select(t).order_by(t.c.id)
            return q if mid is None else q.where(t.c.model_id == mid)

        for r in conn.execute(where(s.ref_events)):
            out.append(
                {"at": r.at, "actor": r.actor, "model": names.get(r.model_id), "kind": r.kind,
                 "name": r.name, "from": refs.get(r.old_version), "to": refs.get(r.new_version),
                 "reason": r.reason, "forced": bool(r.forced), "rollback": bool(r.rollback)}
            )  # fmt: skip
        for r in conn.execute(where(s.state_events)):
            out.append(
                {"at": r.at, "actor": r.actor, "model": names.get(r.model_id), "kind": "state",
                 "name": refs.get(r.version_id), "from": r.old_state, "to": r.new_state,
                 "reason": r.reason, "forced": bool(r.forced), "overridden": r.overridden}
            )  # fmt: skip
        for r in conn.execute(where(s.metric_events)):
            out.append(
                {"at": r.at, "actor": r.actor, "model": names.get(r.model_id), "kind": "metrics",
                 "name": refs.get(r.version_id), "from": r.previous, "to": r.metrics,
                 "reason": r.reason, "forced": False}
            )  # fmt: skip
    out.sort(key=lambda e: e["at"], reverse=True)
    for e in out:
        e["at"] = iso(e["at"])
    return out


def old_lineage(reg, ref, depth):
    from tvc.registry.lineage import Lineage

    with reg.meta.read() as conn:
        root = reg.resolve(ref, conn)
        graph = Lineage(root.id)
        graph.nodes[root.id] = _version_node(root)
        frontier, expanded = [(root, 0)], set()
        while frontier:
            v, level = frontier.pop(0)
            if v.id in expanded:
                continue
            expanded.add(v.id)
            if depth is not None and level >= depth:
                if v.parents or v.base or v.datasets or v.code:
                    graph.truncated.append(v.id)
                continue
            inputs = [
                (p, "parent", "first" if i == 0 else f"#{i + 1}") for i, p in enumerate(v.parents)
            ]
            inputs += [(v.base, "base", None)] if v.base else []
            for vid, kind, name in inputs:
                w = reg.meta.load_version(conn, vid, files=False)
                graph.nodes.setdefault(w.id, _version_node(w))
                graph.edges.append({"from": v.id, "to": w.id, "kind": kind, "name": name})
                frontier.append((w, level + 1))
    return graph


def old_aliases(reg, model):
    r, v, e = s.refs.c, s.versions.c, s.ref_events.c
    out = []
    with reg.meta.read() as conn:
        mid = reg.meta.model_id(conn, model)
        rows = conn.execute(
            sa.select(r.name, r.version_id, v.number, v.state)
            .join_from(s.refs, s.versions, r.version_id == v.id)
            .where(r.model_id == mid, r.kind == "alias")
            .order_by(r.name)
        ).all()
        for name, vid, number, state in rows:
            last = conn.execute(
                sa.select(e.actor, e.at, e.reason, e.forced)
                .where(e.model_id == mid, e.kind == "alias", e.name == name)
                .order_by(e.id.desc())
                .limit(1)
            ).first()
            out.append(
                {"alias": name, "version": f"v{number}", "ref": f"{model}@v{number}", "id": vid,
                 "state": state, "since": iso(last.at) if last else None,
                 "actor": last.actor if last else None, "reason": last.reason if last else None,
                 "forced": bool(last.forced) if last else False}
            )  # fmt: skip
    return out


# -- random histories, written straight into the DB ----------------------------------------------
def random_history(reg, seed: int, *, versions: int = 40, events: int = 120) -> list[str]:
    """Two models; versions with 0-2 parents (merges) and sometimes a base in the other model;
    aliases with no or several moves; audit entries of every kind with repeated timestamps
    (ties) and a few actors. Returns the version ids."""
    rng = random.Random(seed)
    now = time.time()
    with reg.engine.begin() as conn:
        for t in (s.metric_events, s.state_events, s.ref_events, s.refs, s.version_parents):
            conn.execute(t.delete())
        conn.execute(s.versions.delete())
        conn.execute(s.models.delete())
        conn.execute(
            s.models.insert(), [{"id": i, "name": f"m{i}", "created": now} for i in (1, 2)]
        )
        ids: list[tuple[int, str]] = []
        for i in range(versions):
            mid = rng.choice((1, 2))
            vid = f"{rng.getrandbits(256):064x}"
            own = [x for m, x in ids if m == mid]
            other = [x for m, x in ids if m != mid]
            parents = rng.sample(own, min(len(own), rng.choice((0, 1, 1, 1, 2))))
            conn.execute(
                s.versions.insert().values(
                    id=vid, model_id=mid, number=i + 1, message="", author="a", created=now + i,
                    params={}, metrics={"acc": i}, datasets={}, code=None, state="created", size=1,
                    base=rng.choice(other) if other and rng.random() < 0.3 else None,
                )
            )  # fmt: skip
            for pos, p in enumerate(parents):
                conn.execute(
                    s.version_parents.insert().values(version_id=vid, position=pos, parent_id=p)
                )
            ids.append((mid, vid))
        model_of = dict((v, m) for m, v in ids)
        for name in ("prod", "staging", "canary"):
            for mid in (1, 2):
                own = [x for m, x in ids if m == mid]
                if rng.random() < 0.8:
                    conn.execute(
                        s.refs.insert().values(
                            model_id=mid, kind="alias", name=name, version_id=rng.choice(own)
                        )
                    )
        for i in range(events):
            vid = rng.choice(ids)[1]
            mid, who, at = model_of[vid], rng.choice(["ana", "bo", "cy"]), now + rng.randrange(20)
            k = rng.randrange(3)
            if k == 0:
                conn.execute(
                    s.ref_events.insert().values(
                        model_id=mid, kind=rng.choice(["alias", "tag", "branch"]),
                        name=rng.choice(["prod", "staging", "x"]),
                        old_version=rng.choice([None, vid]), new_version=rng.choice([None, vid]),
                        actor=who, at=at, reason="r", forced=rng.random() < 0.2,
                        rollback=rng.random() < 0.2,
                    )
                )  # fmt: skip
            elif k == 1:
                conn.execute(
                    s.state_events.insert().values(
                        model_id=mid, version_id=vid, old_state="created", new_state="trained",
                        actor=who, at=at, reason="", forced=rng.random() < 0.2,
                        overridden=rng.choice([None, "gate"]),
                    )
                )  # fmt: skip
            else:
                conn.execute(
                    s.metric_events.insert().values(
                        model_id=mid, version_id=vid, metrics={"f1": i}, previous={"f1": None},
                        actor=who, at=at, reason="",
                    )
                )  # fmt: skip
    return [v for _m, v in ids]


SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(seed=st.integers(0, 2**32), model=st.sampled_from([None, "m1", "m2"]))
def test_audit_in_sql_is_the_python_merge(reg, seed, model):
    ids = random_history(reg, seed)
    want = old_audit(reg, model)
    assert reg.audit(model) == want
    rng = random.Random(seed)
    for _ in range(6):
        kind = rng.choice([None, "alias", "tag", "branch", "state", "metrics", "nothing"])
        actor = rng.choice([None, "ana", "bo", "nobody"])
        limit, offset = rng.choice([None, 5, 50]), rng.choice([0, 3, 500])
        version = rng.choice([None, rng.choice(ids)])
        subset = [
            e
            for e in want
            if kind in (None, e["kind"])
            and actor in (None, e["actor"])
            and (version is None or _names(reg, version) in (e["name"], e["from"], e["to"]))
        ]
        got = reg.audit(model, limit, offset=offset, kind=kind, actor=actor, version=version)
        assert got == subset[offset : None if limit is None else offset + limit]
    facets = reg.audit_facets(model)
    assert sum(n for *_k, n in facets) == len(want)


def _names(reg, vid):
    return reg.version(vid).ref


@SETTINGS
@given(seed=st.integers(0, 2**32), depth=st.sampled_from([None, 0, 1, 2, 3, 6]))
def test_lineage_by_recursive_cte_is_the_walk(reg, seed, depth):
    ids = random_history(reg, seed, events=0)
    rng = random.Random(seed)
    for vid in rng.sample(ids, 4):
        ref = reg.version(vid).ref
        assert reg.lineage(ref, depth).to_json() == old_lineage(reg, ref, depth).to_json()


@SETTINGS
@given(seed=st.integers(0, 2**32))
def test_aliases_in_one_query_are_the_per_alias_reads(reg, seed):
    random_history(reg, seed)
    for model in ("m1", "m2"):
        assert reg.aliases(model) == old_aliases(reg, model)
        with reg.meta.read() as conn:
            mid = reg.meta.model_id(conn, model)
            ids = [
                v
                for (v,) in conn.execute(
                    sa.select(s.versions.c.id).where(s.versions.c.model_id == mid)
                )
            ]
            _aliases, refs = batch.ref_rows(conn, mid, model, ids)
        want = reg.refs_of_versions(ids)
        assert {k: sorted(v) for k, v in refs.items()} == {k: sorted(v) for k, v in want.items()}


def test_resolve_id_is_resolve(reg, commit):
    v1 = commit(message="one")
    v2 = commit(message="two")
    reg.set_alias("m", "prod", "v1")
    reg.tag("m", "t", "v2")
    with reg.meta.read() as conn:
        for ref in ("m", "m@v1", "m@v2", "m@prod", "m@t", f"m@{v1.id[:10]}", "m@main~1"):
            assert batch.resolve_id(reg, conn, ref) == reg.resolve(ref).id
    with pytest.raises(Exception, match="no version"), reg.meta.read() as conn:
        batch.resolve_id(reg, conn, "m@v9")
    assert v2.parents == (v1.id,)


def test_page_views_are_the_per_version_reads(reg, commit):
    """The model, version, compare and audit pages' batch reads give what the per-version API
    gives — on both databases (the server runs them on PostgreSQL)."""
    base = commit(model="pre", message="pre")
    v1 = commit(message="one", metrics={"acc": 0.5})
    side = commit(message="side", branch="exp")
    v3 = commit(message="merge", merge_parents=[side.id], base=base.ref)
    reg.set_alias("m", "prod", "v1")
    reg.set_alias("m", "prod", "v3", reason="better")
    reg.tag("m", "t", "v3")
    reg.set_state("m@v3", "training")
    reg.add_metrics("m@v3", {"f1": 0.7})

    view = batch.model_view(reg, "m", offset=0, limit=2)
    assert view.total == 3
    assert [v.number for v in view.versions] == [3, 2]
    for v in view.versions:
        want = reg.version(v.id)
        assert v.parents == want.parents and v.metrics == want.metrics
    assert view.versions[0].parents == (v1.id, side.id)  # a merge's parents, in order
    assert view.aliases == reg.aliases("m")
    assert sorted(view.refs[v3.id]) == sorted(reg.refs_pointing_at(v3))
    assert [(n, i) for n, i, _m in view.series] == [(1, v1.id), (2, side.id), (3, v3.id)]

    page = batch.version_view(reg, "m@prod", depth=3)
    assert page.version == reg.resolve("m@prod")
    assert page.committed == {}
    assert page.lineage.to_json() == reg.lineage("m@prod", depth=3).to_json()
    assert page.known[base.id].ref == "pre@v1"
    assert sorted(page.refs) == sorted(reg.refs_pointing_at(v3))
    assert page.audit == [e for e in reg.audit("m") if v3.ref in (e["name"], e["from"], e["to"])]
    assert [batch.versions_for(reg, ["m@v1", "m@exp"])[i].id for i in (0, 1)] == [v1.id, side.id]

    audit = batch.audit_view(reg, None, kind="alias", limit=1)
    assert audit.total == 2 and audit.entries == reg.audit(None, 1, kind="alias")
    only_pre = batch.audit_view(reg, None, may_read=lambda m: m == "pre")
    mine = [e for e in reg.audit() if e["model"] == "pre"]  # its branch's creation
    assert only_pre.total == len(mine) == 1 and only_pre.entries == mine
