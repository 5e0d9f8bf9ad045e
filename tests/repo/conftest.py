from __future__ import annotations

import pytest

from repo_helpers import make_model_dir


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "out"
    make_model_dir(d)
    return d


@pytest.fixture
def make_dir(tmp_path):
    def make(name, **kw):
        d = tmp_path / name
        make_model_dir(d, **kw)
        return d

    return make
