"""Search latency on a registry of 10,000 versions (target: < 100 ms median per query).

The registry is synthetic: its rows are written in bulk straight into the metadata DB (no
files are committed — search reads only metadata), spread over 50 models with params, metrics
(some added later with ``tvc metric``), lifecycle states, creation times over 90 days, tags and
aliases. Each query runs through the public API (``Registry.search``: parse, compile, execute,
build Versions), a few times; the median is reported.

``python bench/search_bench.py [N]`` prints the table; ``bench/run.py`` calls
``bench_search(n=10000)``, which returns ``{"versions": n, "queries": [{query, order_by,
limit, results, median_ms}], "median_ms": worst median}``.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUERIES: list[tuple[str, str | None, int | None]] = [
    ("metrics.acc >= 0.9 and params.lr < 1e-3 and state = evaluated", "-metrics.acc", 20),
    ("metrics.acc >= 0.95", "-metrics.acc", 10),
    ("(state = production or state = staged) and metrics.f1 > 0.8", None, 50),
    ("tags = release-3", None, None),
    ("alias = production", None, None),
    ("model = model-07 and version > 150", "version", None),
    ("created > 7d and not state = archived", "-created", 50),
    ("params.optimizer = adam and params.batch >= 64 and metrics.loss < 0.3", "metrics.loss", 20),
    ("state >= staged", "-metrics.acc", 20),
    ("", "-created", 20),
]


def build_synthetic(root: Path, n: int = 10_000, models: int = 50, seed: int = 0) -> None:
    """A registry at ``root`` whose metadata holds ``n`` versions (bulk SQL, no files)."""

    import tvc
    from tvc.registry.lifecycle import DEFAULT_STATES
    from tvc.repo import schema as s

    rng = random.Random(seed)
    reg = tvc.Registry.init(root)
    now = time.time()
    per_model = n // models
    with reg.engine.begin() as conn:
        model_rows = [
            {"id": i + 1, "name": f"model-{i:02d}", "created": now - 90 * 86400}
            for i in range(models)
        ]
        conn.execute(s.models.insert(), model_rows)
        versions, refs = [], []
        for i in range(n):
            mid = i % models + 1
            number = i // models + 1
            vid = f"{rng.getrandbits(256):064x}"
            metrics = {"acc": round(rng.uniform(0.5, 1.0), 4), "loss": round(rng.uniform(0, 2), 4)}
            if rng.random() < 0.7:
                metrics["f1"] = round(rng.uniform(0.4, 1.0), 4)
            extra = {"acc": round(rng.uniform(0.5, 1.0), 4)} if rng.random() < 0.1 else None
            versions.append(
                {
                    "id": vid,
                    "model_id": mid,
                    "number": number,
                    "message": f"run {i}",
                    "author": rng.choice(["ana", "bo", "chen", "dee"]),
                    "created": now - rng.uniform(0, 90 * 86400),
                    "params": {
                        "lr": rng.choice([1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]),
                        "batch": rng.choice([16, 32, 64, 128]),
                        "optimizer": rng.choice(["adam", "sgd", "adamw"]),
                    },
                    "metrics": metrics,
                    "extra_metrics": extra,
                    "datasets": {},
                    "code": None,
                    "base": None,
                    "state": rng.choice(DEFAULT_STATES),
                    "size": 1000,
                }
            )
            if number % 20 == 0:
                refs.append(
                    {
                        "model_id": mid,
                        "kind": "tag",
                        "name": f"release-{number // 20}",
                        "version_id": vid,
                    }
                )
            if number == per_model // 2:
                refs.append(
                    {"model_id": mid, "kind": "alias", "name": "production", "version_id": vid}
                )
        conn.execute(s.versions.insert(), versions)
        conn.execute(s.refs.insert(), refs)
    reg.close()


def bench_search(n: int = 10_000, repeat: int = 7, out=sys.stdout) -> dict:
    """Build a synthetic registry of ``n`` versions in a temp dir, time the queries, print a
    table to ``out`` and return the numbers (see the module doc)."""
    import tvc

    with tempfile.TemporaryDirectory(prefix="tvc-search-bench-") as tmp:
        t0 = time.perf_counter()
        build_synthetic(Path(tmp), n)
        build_s = time.perf_counter() - t0
        reg = tvc.Registry(tmp)
        try:
            rows = []
            for text, order, limit in QUERIES:
                reg.search(text, order_by=order, limit=limit)  # warm: caches, page cache
                times, found = [], 0
                for _ in range(repeat):
                    t = time.perf_counter()
                    found = len(reg.search(text, order_by=order, limit=limit))
                    times.append((time.perf_counter() - t) * 1000)
                rows.append(
                    {
                        "query": text,
                        "order_by": order,
                        "limit": limit,
                        "results": found,
                        "median_ms": round(statistics.median(times), 2),
                    }
                )
        finally:
            reg.close()
    worst = max(r["median_ms"] for r in rows)
    print(f"search over {n} versions (built in {build_s:.1f} s); median of {repeat} runs", file=out)
    print(f"{'median ms':>9}  {'results':>7}  query [order-by, limit]", file=out)
    for r in rows:
        extra = ", ".join(
            x
            for x in (
                r["order_by"] and f"--order-by {r['order_by']}",
                r["limit"] and f"--limit {r['limit']}",
            )
            if x
        )
        shown = r["query"] or "(all)"
        print(f"{r['median_ms']:>9.1f}  {r['results']:>7}  {shown}  [{extra}]", file=out)
    verdict = "ok" if worst < 100 else "SLOW"
    print(f"slowest median {worst:.1f} ms (target < 100 ms): {verdict}", file=out)
    return {"versions": n, "queries": rows, "median_ms": worst}


if __name__ == "__main__":
    bench_search(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
