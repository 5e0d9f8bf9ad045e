"""A cold ``tvc`` process loads only what its command needs (issue 12, point 8): the read
commands never import numpy or the format parsers, ``--version`` imports nothing of Typer or
SQLAlchemy. Each check runs the command in a fresh interpreter and looks at ``sys.modules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY_FOR_READS = ("numpy", "tvc.formats", "tvc.analysis", "tvc.store.codecs", "tvc.repo.reader")

_PROBE = (
    "import sys, json\n"
    "from tvc.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "from tvc.cli.main import command\n"
    "sys.stderr.write('BUILT=' + json.dumps(sorted(command().commands)) + '\\n')\n"
    "sys.stderr.write('MODULES=' + json.dumps(sorted(sys.modules)) + '\\n')\n"
    "sys.exit(code)\n"
)


def _run(argv: list[str], cwd) -> tuple[set[str], list[str]]:
    """(modules imported, Click commands built) by ``tvc ARGV`` in a fresh interpreter."""
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=cwd,
        env={**os.environ, "TVC_DAEMON": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    built = json.loads(r.stderr.rsplit("BUILT=", 1)[1].split("\n", 1)[0])
    return set(json.loads(r.stderr.rsplit("MODULES=", 1)[1])), built


def _modules(argv: list[str], cwd) -> set[str]:
    return _run(argv, cwd)[0]


@pytest.fixture
def small_registry(registry, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(os.urandom(2048))
    registry.commit("m", [tmp_path / "m"], "one")
    return registry.root


@pytest.mark.parametrize(
    "argv", [["log", "m"], ["show", "m"], ["ls", "m"], ["ls"], ["log", "m", "--json"]]
)
def test_read_commands_do_not_import_numpy(small_registry, argv):
    loaded = _modules(argv, small_registry)
    heavy = sorted(m for m in loaded if m.split(".")[0] == "numpy" or m in HEAVY_FOR_READS)
    assert not heavy, f"tvc {' '.join(argv)} imported {heavy}"
    assert "_sqlite3" in loaded  # the probe did run the command against the DB


def test_a_commit_without_tensors_does_not_import_numpy(small_registry):
    (small_registry / "notes.txt").write_text("what changed")
    loaded = _modules(["commit", "m", "notes.txt", "-m", "notes", "-q"], small_registry)
    assert "tvc.formats" in loaded  # the file went through format detection
    assert not [m for m in loaded if m.split(".")[0] == "numpy"]


def test_a_small_commit_loads_neither_rich_nor_the_query_language(small_registry):
    """Rich (15-20 ms) waits for a table or a bar that has been due for 0.3 s, the search
    language (6 ms) for a search or a gate, and Typer builds only the command that runs."""
    (small_registry / "w2.bin").write_bytes(os.urandom(4096))
    loaded, built = _run(["commit", "m", "w2.bin", "-m", "small"], small_registry)
    assert "tvc.formats" in loaded  # the commit did run
    late = sorted(m for m in loaded if m.split(".")[0] == "rich" or m == "tvc.registry.query")
    assert not late, f"a small commit imported {late}"
    assert built == ["commit"]


def test_version_imports_neither_typer_nor_sqlalchemy(tmp_path):
    """``-X importtime`` lists every module the process imported, even though the CLI leaves
    with ``os._exit`` (nothing after it could look at ``sys.modules``)."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tvc", "--version"],
        cwd=tmp_path,
        env={**os.environ, "TVC_DAEMON": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("tvc ")
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()}
    bad = sorted({"typer", "click", "rich", "sqlalchemy", "numpy"} & imported)
    assert not bad, f"tvc --version imported {bad}"
