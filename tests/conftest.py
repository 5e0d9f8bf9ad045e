"""Shared fixtures. Hypothesis is deterministic in CI (``CI`` set) and quick everywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's registry, author or lock settings."""
    monkeypatch.delenv("TVC_DIR", raising=False)
    monkeypatch.setenv("TVC_AUTHOR", "tester")
    monkeypatch.setenv("TVC_LOCK_TIMEOUT", "20")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def registry(tmp_path: Path):
    import tvc

    reg = tvc.Registry.init(tmp_path / "reg")
    yield reg
    reg.close()
