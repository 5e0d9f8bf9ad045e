"""Every page of the UI reads its metadata in a fixed, small number of SQL statements, whatever
the size of the registry (issue 17: "every page is one or two SQL queries, not one per row").

Two registries of the same shape are built — a small one and one with many more versions (more
than a page), aliases, tags, a deeper lineage and more audit entries than an audit page shows —
and each page is rendered in-process (the ASGI app ``tvc ui`` serves) while a SQLAlchemy
``before_cursor_execute`` hook counts the statements. The counts must be equal on both, and
small. Manifests are read cold each time (the cache is emptied), so a count never depends on
what an earlier request left behind.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from safetensors.numpy import save_file

import tvc
from tvc.repo import schema as s

PAGES = [
    "/ui/",
    "/ui/m/long",
    "/ui/m/long?page=1&metric=acc&metric=loss",
    "/ui/v/long@main",
    "/ui/v/long@v2",
    "/ui/v/long@a1",
    "/ui/v/long@t1",
    "/ui/v/long@main?filter=layers.1",
    "/ui/audit",
    "/ui/audit?page=2&actor=user1",
    "/ui/audit?model=long&kind=state",
    "/ui/compare?a=long@v2&b=long@v3",
]
# list pages; every other page at most 6. Compare: 6 for the two versions, 2 for the diff's
# reading of the changed tensors' chunk index rows (one batch), 4 for blame's first window of
# history, 4 for the base models and merge parents it names
LIMITS = {"/ui/": 3, "/ui/audit": 3, "/ui/compare": 16}


def build(root: Path, *, bulk: int, aliases: int, events: int) -> Path:
    """Model ``long``: 3 real commits (a small safetensors file, one tensor changing each
    time; v2 fine-tuned from ``pre@v1``), then ``bulk`` more versions of the same chain written
    into the DB with v3's files, ``aliases`` aliases and tags, ``events`` audit entries."""
    os.environ.setdefault("TVC_AUTHOR", "test")
    reg = tvc.Registry.init(root / "reg")
    rng = np.random.default_rng(0)
    src = root / "src"
    src.mkdir()
    (src / "w.txt").write_text("pre")
    reg.commit("pre", [src / "w.txt"], "pretrained", detect_code=False)
    weights = {f"layers.{i}.weight": rng.standard_normal((4, 4)).astype(np.float32) for i in (0, 1)}
    for n in range(3):
        weights[f"layers.{n % 2}.weight"] += np.float32(0.5)
        save_file(weights, str(src / "model.safetensors"))
        reg.commit(
            "long",
            [src / "model.safetensors"],
            f"step {n}",
            metrics={"acc": 0.5 + n / 10, "loss": 1 / (n + 1)},
            base="pre@v1" if n == 1 else None,
            detect_code=False,
        )
    reg.set_alias("long", "a1", "v1")
    reg.tag("long", "t1", "v2")
    reg.set_state("long@v2", "training")
    reg.add_metrics("long@v2", {"f1": 0.5})
    v, f, mo = s.versions.c, s.version_files.c, s.models.c
    with reg.engine.begin() as conn:
        mid = conn.execute(sa.select(mo.id).where(mo.name == "long")).scalar_one()
        rows = conn.execute(sa.select(s.versions).where(v.model_id == mid).order_by(v.number)).all()
        last = rows[-1]
        files = [
            dict(r._mapping)
            for r in conn.execute(sa.select(s.version_files).where(f.version_id == last.id))
        ]
        prev, ids = last.id, [r.id for r in rows]
        for number in range(4, 4 + bulk):
            vid = f"{number:064x}"
            doc = dict(last._mapping)
            doc.update(id=vid, number=number, created=last.created + number, extra_metrics=None)
            conn.execute(s.versions.insert().values(**doc))
            conn.execute(s.version_files.insert(), [{**fr, "version_id": vid} for fr in files])
            conn.execute(
                s.version_parents.insert().values(version_id=vid, position=0, parent_id=prev)
            )
            prev = vid
            ids.append(vid)
        conn.execute(
            s.refs.update()
            .where(s.refs.c.model_id == mid, s.refs.c.name == "main")
            .values(version_id=prev)
        )
        conn.execute(s.models.update().where(mo.id == mid).values(last_number=3 + bulk))
        conn.execute(
            s.refs.insert(),
            [
                {"model_id": mid, "kind": kind, "name": f"{kind[0]}x{i}", "version_id": ids[-1 - i]}
                for kind, i in itertools.product(("alias", "tag"), range(aliases))
            ],
        )
        at = last.created + bulk + 10
        for i in range(events):
            vid, who = ids[-1 - i % len(ids)], f"user{i % 3}"
            if i % 3 == 0:
                conn.execute(
                    s.ref_events.insert().values(
                        model_id=mid, kind="alias", name=f"ax{i % max(aliases, 1)}",
                        old_version=None, new_version=vid, actor=who, at=at + i, reason="",
                        forced=False, rollback=False,
                    )
                )  # fmt: skip
            elif i % 3 == 1:
                conn.execute(
                    s.state_events.insert().values(
                        model_id=mid, version_id=vid, old_state="created", new_state="trained",
                        actor=who, at=at + i, reason="", forced=False,
                    )
                )  # fmt: skip
            else:
                conn.execute(
                    s.metric_events.insert().values(
                        model_id=mid, version_id=vid, metrics={"f1": i}, previous={},
                        actor=who, at=at + i, reason="",
                    )
                )  # fmt: skip
    reg.close()
    return root / "reg"


def statements_per_page(data: Path) -> dict[str, list[str]]:
    from fastapi.testclient import TestClient

    from tvc.ui import create_app

    app = create_app(data)
    reg = app.state.registry
    seen: list[str] = []
    sa.event.listen(
        reg.engine, "before_cursor_execute", lambda _c, _cur, stmt, *a: seen.append(stmt)
    )
    client = TestClient(app, base_url="http://127.0.0.1")
    out = {}
    for path in PAGES:
        reg._manifest_cache.clear()
        seen.clear()
        resp = client.get(path)
        assert resp.status_code == 200, (path, resp.text[:300])
        out[path] = list(seen)
    reg.close()
    return out


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    small = build(tmp_path_factory.mktemp("small"), bulk=0, aliases=1, events=3)
    large = build(tmp_path_factory.mktemp("large"), bulk=260, aliases=30, events=700)
    return statements_per_page(small), statements_per_page(large)


@pytest.mark.parametrize("path", PAGES)
def test_a_page_runs_as_many_statements_on_a_large_registry_as_on_a_small_one(counts, path):
    small, large = counts
    assert len(large[path]) == len(small[path]), (
        f"{path}: {len(small[path])} statements on the small registry, "
        f"{len(large[path])} on the large one:\n" + "\n".join(large[path])
    )
    assert len(large[path]) <= LIMITS.get(path.split("?")[0], 6), "\n".join(large[path])


def test_the_audit_page_pages_in_sql(counts):
    """The audit log is never read whole: every statement of the audit page that reads an
    event table either groups it (the filters' choices) or takes one page (LIMIT)."""
    _small, large = counts
    for path in ("/ui/audit", "/ui/audit?page=2&actor=user1", "/ui/audit?model=long&kind=state"):
        for stmt in large[path]:
            if "_events" in stmt:
                assert "GROUP BY" in stmt or "LIMIT" in stmt, stmt
