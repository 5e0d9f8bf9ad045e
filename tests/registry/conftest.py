"""Registries for registry-layer tests: tiny real commits, or many versions written in bulk."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import pytest

import tvc
from tvc.repo import schema as s


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request, tmp_path: Path):
    """Every registry-layer test runs on both metadata DBs: search, gates, lifecycle and the
    audit log must give the same answers on SQLite and on PostgreSQL (a real server)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    r = tvc.Registry.init(tmp_path / "reg", metadata=url)
    yield r
    r.close()


@pytest.fixture
def commit(reg, tmp_path: Path):
    """``commit(model, text, **kw)``: a real version of a one-file model (fast: tiny file)."""
    counter = itertools.count()

    def make(model: str = "m", text: str | None = None, **kw):
        d = tmp_path / f"src-{next(counter)}"
        d.mkdir()
        (d / "weights.txt").write_text(text if text is not None else f"weights {d.name}")
        kw.setdefault("detect_code", False)
        return reg.commit(model, [d], kw.pop("message", "msg"), **kw).version

    return make


@pytest.fixture
def configure():
    """``configure(reg, toml) -> reg``: append to config.toml and re-read it, as a new
    process would."""

    def write(reg, text: str):
        cfg = reg.dir / "config.toml"
        cfg.write_text(cfg.read_text() + "\n" + text)
        reg.config = reg._read_config()
        return reg

    return write


@pytest.fixture(scope="session")
def bulk():
    """``bulk(reg, n)``: see :func:`bulk_versions`."""
    return bulk_versions


STATES = ("created", "training", "trained", "evaluated", "staged", "production", "archived")


def bulk_versions(reg, n: int, models: int = 5, seed: int = 0) -> None:
    """``n`` versions written straight into the metadata DB (search reads only metadata).

    Values are deliberately mixed: some keys missing, some strings where others have numbers,
    booleans, metrics added later (``extra_metrics``), tags and aliases.
    """
    rng = random.Random(seed)
    now = time.time()
    with reg.engine.begin() as conn:
        conn.execute(
            s.models.insert(),
            [{"id": i + 1, "name": f"m{i}", "created": now} for i in range(models)],
        )
        versions, refs = [], []
        for i in range(n):
            mid = i % models + 1
            number = i // models + 1
            vid = f"{rng.getrandbits(256):064x}"
            metrics = {"acc": round(rng.uniform(0.5, 1.0), 3)}
            if rng.random() < 0.3:
                del metrics["acc"]
            if rng.random() < 0.1:
                metrics["acc"] = "n/a"
            if rng.random() < 0.6:
                metrics["loss"] = rng.choice([0.1, 0.2, 0.5, 1, 2])
            params = {"lr": rng.choice([1e-4, 1e-3, 1e-2]), "opt": rng.choice(["adam", "sgd"])}
            if rng.random() < 0.3:
                params["fp16"] = rng.random() < 0.5
            extra = {"acc": round(rng.uniform(0.5, 1.0), 3)} if rng.random() < 0.15 else None
            versions.append(
                {
                    "id": vid,
                    "model_id": mid,
                    "number": number,
                    "message": "",
                    "author": rng.choice(["ana", "bo"]),
                    "created": now - rng.uniform(0, 30 * 86400),
                    "params": params,
                    "metrics": metrics,
                    "extra_metrics": extra,
                    "datasets": {},
                    "code": None,
                    "base": None,
                    "state": rng.choice(STATES),
                    "size": 1,
                }
            )
            if rng.random() < 0.1:
                refs.append(
                    {"model_id": mid, "kind": "tag", "name": f"t{number % 3}", "version_id": vid}
                )
        conn.execute(s.versions.insert(), versions)
        # at most one alias per (model, name): the primary key
        seen = set()
        for row in versions:
            if rng.random() < 0.05 and row["model_id"] not in seen:
                seen.add(row["model_id"])
                refs.append(
                    {
                        "model_id": row["model_id"],
                        "kind": "alias",
                        "name": "production",
                        "version_id": row["id"],
                    }
                )
        tags = {(r["model_id"], r["kind"], r["name"]): r for r in refs}
        conn.execute(s.refs.insert(), list(tags.values()))
