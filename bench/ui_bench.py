"""Web UI render times of every page — the model page of a model with 5,000 versions, the
version page of a version with 2,000 tensors (issue 17: each under a second), the models page,
the audit page over 10,000 entries and the compare page — with the SQL statements each runs
(issue 17: a fixed number per page, not one per row).

The 2,000-tensor version is a real commit (a safetensors file of 2,000 small tensors). The
5,000-version model starts as 20 real commits (a small safetensors file changing one tensor
each time); the other 4,980 versions are written in bulk into the metadata DB as more versions
of the same chain, each with the files of one of the real ones, so the pages read real
manifests and chunk lists, while building the registry takes seconds instead of the minutes
5,000 commits take here. The audit log gets 10,000 entries (alias moves, transitions,
metrics added later) and the model ten aliases and ten tags, written the same way.

Pages are rendered in-process through the ASGI app ``tvc ui`` serves (Starlette's TestClient:
no socket, no browser), ``--runs`` times each (default 7); the median is reported, with the
number of SQL statements the page executed (counted by a SQLAlchemy event hook).

``python bench/ui_bench.py [--versions N] [--tensors N] [--runs N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build(root: Path, versions: int, tensors: int, audit: int = 10000) -> Path:
    import sqlalchemy as sa
    from safetensors.numpy import save_file

    import tvc
    from tvc.repo import schema as s

    os.environ.setdefault("TVC_AUTHOR", "bench")
    reg = tvc.Registry.init(root / "reg")
    rng = np.random.default_rng(0)
    out = root / "wide"
    out.mkdir()
    save_file(
        {
            f"blocks.{i // 8}.t{i % 8}.weight": rng.standard_normal(64).astype(np.float32)
            for i in range(tensors)
        },
        str(out / "model.safetensors"),
    )
    reg.commit("wide", [out], "2,000 tensors", detect_code=False)

    out = root / "long"
    out.mkdir()
    weights = {
        f"layers.{i}.weight": rng.standard_normal((16, 16)).astype(np.float32) for i in range(6)
    }
    real = min(20, versions)
    for n in range(real):
        weights[f"layers.{n % 6}.weight"] += np.float32(0.01)
        save_file(weights, str(out / "model.safetensors"))
        reg.commit(
            "long",
            [out],
            f"step {n}",
            metrics={"acc": 0.5 + n / 100, "loss": 1 / (n + 1)},
            params={"step": n},
            detect_code=False,
        )
    v, f, r, mo = s.versions.c, s.version_files.c, s.refs.c, s.models.c
    with reg.engine.begin() as conn:
        mid = conn.execute(sa.select(mo.id).where(mo.name == "long")).scalar_one()
        rows = conn.execute(sa.select(s.versions).where(v.model_id == mid).order_by(v.number)).all()
        files = {
            vid: [
                dict(row._mapping)
                for row in conn.execute(sa.select(s.version_files).where(f.version_id == vid))
            ]
            for vid in (row.id for row in rows)
        }
        last = rows[-1]
        new_versions, new_files, new_parents = [], [], []
        prev = last.id
        for number in range(real + 1, versions + 1):
            src = rows[number % real]
            vid = f"{rng.integers(0, 2**63):016x}" * 4
            doc = dict(src._mapping)
            doc.update(
                id=vid,
                number=number,
                message=f"step {number - 1}",
                created=last.created + number,
                extra_metrics=None,
                metrics={
                    "acc": round(0.5 + (number % 500) / 1000, 4),
                    "loss": round(1 / number, 5),
                },
                params={"step": number - 1},
            )
            new_versions.append(doc)
            new_files += [{**fr, "version_id": vid} for fr in files[src.id]]
            new_parents.append({"version_id": vid, "position": 0, "parent_id": prev})
            prev = vid
        if new_versions:
            conn.execute(s.versions.insert(), new_versions)
            conn.execute(s.version_files.insert(), new_files)
            conn.execute(s.version_parents.insert(), new_parents)
            conn.execute(
                s.refs.update()
                .where(r.model_id == mid, r.kind == "branch", r.name == "main")
                .values(version_id=prev)
            )
            conn.execute(s.models.update().where(mo.id == mid).values(last_number=versions))
        # an audit log of `audit` entries (alias moves, transitions, metrics added later) and a
        # few aliases and tags, so that pages that list them have many to list
        ids = [row.id for row in rows] + [d["id"] for d in new_versions]
        t0 = last.created + versions + 1
        ref_ev, state_ev, metric_ev = [], [], []
        for i in range(audit):
            vid, at = ids[i % len(ids)], t0 + i
            who = f"user{i % 7}"
            if i % 3 == 0:
                ref_ev.append(
                    dict(model_id=mid, kind="alias", name=f"a{i % 5}", old_version=None,
                         new_version=vid, actor=who, at=at, reason="bench", forced=False,
                         rollback=False)
                )  # fmt: skip
            elif i % 3 == 1:
                state_ev.append(
                    dict(model_id=mid, version_id=vid, old_state="created", new_state="trained",
                         actor=who, at=at, reason="", forced=False, overridden=None)
                )  # fmt: skip
            else:
                metric_ev.append(
                    dict(model_id=mid, version_id=vid, metrics={"f1": i / audit}, previous={},
                         actor=who, at=at, reason="")
                )  # fmt: skip
        for table, rows_ in (
            (s.ref_events, ref_ev),
            (s.state_events, state_ev),
            (s.metric_events, metric_ev),
        ):
            if rows_:
                conn.execute(table.insert(), rows_)
        refs = [
            {"model_id": mid, "kind": kind, "name": f"{kind[0]}{i}", "version_id": ids[-1 - i]}
            for kind in ("alias", "tag")
            for i in range(min(10, len(ids)))
        ]
        conn.execute(s.refs.insert(), refs)
    reg.close()
    return root / "reg"


def measure(data: Path, runs: int) -> list[dict]:
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from tvc.ui import create_app

    app = create_app(data)
    reg = app.state.registry
    statements = [0]
    sa.event.listen(
        reg.engine,
        "before_cursor_execute",
        lambda *a, **k: statements.__setitem__(0, statements[0] + 1),
    )
    client = TestClient(app, base_url="http://127.0.0.1")
    pages = [
        ("model page, 5,000 versions (page 1 of 50)", "/ui/m/long"),
        ("model page, 5,000 versions (page 50 of 50)", "/ui/m/long?page=50"),
        ("model page, 5,000 versions, 2 metric charts", "/ui/m/long?metric=acc&metric=loss"),
        ("version page, 2,000 tensors (tensors 1-250)", "/ui/v/wide@v1"),
        ("version page, 2,000 tensors, filtered", "/ui/v/wide@v1?filter=blocks.7."),
        ("version page, newest of a 5,000-version chain", "/ui/v/long@main"),
        ("models page", "/ui/"),
        ("audit page, 10,000 entries (page 1)", "/ui/audit"),
        ("audit page, 10,000 entries (page 3, one actor)", "/ui/audit?actor=user3&page=3"),
        ("audit page, 10,000 entries, one model and kind", "/ui/audit?model=long&kind=state"),
        ("compare page, 2 versions of 6 tensors", "/ui/compare?a=long@v19&b=long@v20"),
    ]
    out = []
    for name, path in pages:
        client.get(path)  # warm: templates compiled, manifests cached as a server would have
        times, counts = [], []
        for _ in range(runs):
            reg._manifest_cache.clear()  # every run decodes its manifests again
            statements[0] = 0
            t = time.perf_counter()
            resp = client.get(path)
            times.append(time.perf_counter() - t)
            counts.append(statements[0])
            assert resp.status_code == 200, (path, resp.status_code)
        out.append(
            {
                "page": name,
                "path": path,
                "median_s": statistics.median(times),
                "sql": max(counts),
                "bytes": len(resp.content),
            }
        )
    return out


def bench_ui(versions: int = 5000, tensors: int = 2000, runs: int = 7) -> dict:
    """``{"runs", "load", "pages": [{page, path, median_s, sql, bytes}]}`` (bench/run.py)."""
    with tempfile.TemporaryDirectory(prefix="tvc-ui-bench-") as tmp:
        t = time.perf_counter()
        data = build(Path(tmp), versions, tensors)
        print(f"registry built in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        rows = measure(data, runs)
    return {"runs": runs, "load": round(os.getloadavg()[0], 1), "pages": rows}


def report(res: dict) -> str:
    if "pages" not in res:
        return f"(not run: {res})"
    lines = [
        f"Median of {res['runs']} renders, load average {res['load']}.",
        "",
        "| page | median | SQL statements | HTML |",
        "|---|---|---|---|",
    ]
    for r in res["pages"]:
        lines.append(
            f"| {r['page']} | {r['median_s'] * 1000:.0f} ms | {r['sql']} | "
            f"{r['bytes'] / 1000:.0f} KB |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", type=int, default=5000)
    ap.add_argument("--tensors", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    print("\n## Web UI render times\n")
    print(report(bench_ui(args.versions, args.tensors, args.runs)))


if __name__ == "__main__":
    main()
