"""Fixtures of the serving tests: a real registry, commits of models built by
:mod:`serving_helpers`, a checkout cache."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import tvc


@pytest.fixture
def reg(tmp_path: Path):
    r = tvc.Registry.init(tmp_path / "reg")
    yield r
    r.close()


@pytest.fixture
def commit(reg, tmp_path: Path):
    """``commit(model, build, *args)``: build a model folder with ``build(dest, *args)`` and
    commit it; returns the Version."""
    counter = itertools.count()

    def make(model: str, build, *args, **kw):
        d = build(tmp_path / f"src-{next(counter)}", *args)
        kw.setdefault("detect_code", False)
        return reg.commit(model, [d], kw.pop("message", "model"), **kw).version

    return make


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "serve-cache"
