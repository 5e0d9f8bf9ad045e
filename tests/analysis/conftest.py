"""Fixtures of the analysis tests: real fine-tunes (trained once per session), registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis_helpers import Tunes, Weights, train_tunes, write_model


@pytest.fixture(scope="session")
def tunes() -> Tunes:
    return train_tunes()


@pytest.fixture
def reg(tmp_path):
    import tvc

    r = tvc.Registry.init(tmp_path / "reg")
    yield r
    r.close()


@pytest.fixture
def folder(tmp_path):
    """``folder(weights, **kw)`` → a new model folder (model.safetensors + config.json)."""
    counter = iter(range(10_000))

    def make(weights: Weights, **kw) -> Path:
        return write_model(tmp_path / f"m{next(counter)}", weights, **kw)

    return make
