"""Many small files (issue 12, point 9): a commit stores them in batches with batched index
lookups, a checkout writes them from batched reads, and ``ls`` reads a version in a few queries.
These tests check that what is stored and written is exact, and count the queries; they never
time anything."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tvc.repo import files

N_FILES = 5000


def _tree(root: Path, n: int, seed: int = 0) -> dict[str, bytes]:
    """``n`` files in 50 directories: mostly 1 KB, some empty, some just over SMALL_FILE (so a
    batch is cut by a large file), some equal (dedup inside one commit)."""
    out: dict[str, bytes] = {}
    for i in range(n):
        rel = f"d{i % 50:02d}/f{i:05d}.txt"
        if i % 997 == 0:
            data = b""
        elif i % 1499 == 0:
            data = hashlib.sha256(f"{seed}/{i}".encode()).digest() * (files.SMALL_FILE // 32 + 9)
        elif i % 10 == 0:
            data = b"same content in many files\n" * 40
        else:
            data = hashlib.sha256(f"{seed}/{i}".encode()).digest() * 32  # 1 KB
        out[rel] = data
    for rel, data in out.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return out


def _read(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".tvc")
    }


class _Statements:
    """Counts the SQL statements an engine executes (an event listener: the engine is real)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine, self.n = engine, 0
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args) -> None:
        self.n += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._count)


def test_thousands_of_small_files_round_trip(registry, tmp_path):
    src = tmp_path / "src"
    want = _tree(src, N_FILES)
    r1 = registry.commit("many", [src], "v1")
    assert len(r1.files) == N_FILES
    assert {f.path for f in r1.files} == set(want)
    for f in r1.files:
        assert f.size == len(want[f.path])

    out = tmp_path / "out"
    registry.checkout("many@v1", out)
    assert _read(out) == want

    # The same tree again: every chunk and manifest is found by the batched lookups.
    r2 = registry.commit("many", [src], "again")
    assert r2.new_bytes == 0 and r2.new_chunks == 0

    # Change a few files (one of them large), commit, check out over the old checkout.
    changed = [*sorted(want)[1::500], next(r for r in want if len(want[r]) > files.SMALL_FILE)]
    for rel in changed:
        want[rel] = os.urandom(len(want[rel]) or 7)
        (src / rel).write_bytes(want[rel])
    r3 = registry.commit("many", [src], "v3")
    assert 0 < r3.new_chunks <= 3 * len(changed)
    registry.checkout("many@v3", out)
    assert _read(out) == want
    for rel in changed:
        assert registry.read("many@v3", rel) == want[rel]


def test_batches_of_any_size_store_the_same(registry, tmp_path, monkeypatch):
    """Batch boundaries (files, bytes, a large file) do not change what is stored."""
    src = tmp_path / "src"
    want = _tree(src, 300, seed=1)
    a = registry.commit("a", [src], "default batches")
    monkeypatch.setattr(files, "SMALL_BATCH", 7)
    monkeypatch.setattr(files, "SMALL_BATCH_BYTES", 3000)
    b = registry.commit("b", [src], "tiny batches")
    assert [(f.path, f.manifest_id) for f in a.files] == [(f.path, f.manifest_id) for f in b.files]
    out = tmp_path / "out"
    registry.checkout("b", out)
    assert _read(out) == want


def test_ls_and_checkout_of_many_files_take_a_few_queries(registry, tmp_path):
    """``ls``/``show`` of a version and a checkout do not spend a query per file."""
    src = tmp_path / "src"
    _tree(src, 2000, seed=2)
    registry.commit("many", [src], "v1")
    count = _Statements(registry.engine)
    try:
        registry.checkout("many", tmp_path / "out")
        assert count.n < 40, count.n  # 2,000 files: a query per file would be thousands
    finally:
        count.close()

    env = {**os.environ, "TVC_DAEMON": "0"}
    code = (
        "import sys, sqlalchemy as sa\n"
        "n = 0\n"
        "def count(*a):\n"
        "    global n\n"
        "    n += 1\n"
        "sa.event.listen(sa.engine.Engine, 'before_cursor_execute', count)\n"
        "from tvc.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "sys.stderr.write(f'statements={n}\\n')\n"
        "sys.exit(code)\n"
    )
    for cmd in (["ls", "many", "--json"], ["show", "many", "--json"], ["ls", "many"]):
        r = subprocess.run(
            [sys.executable, "-c", code, "-R", str(registry.root), *cmd],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        statements = int(r.stderr.rsplit("statements=", 1)[1])
        assert statements <= 12, (cmd, statements)
        if cmd[-1] == "--json":
            doc = json.loads(r.stdout)
            assert len(doc["files"]) == 2000
        else:
            lines = r.stdout.splitlines()
            assert len(lines) == 2001 and lines[0].split() == [
                "path",
                "size",
                "format",
                "tensors",
                "blake3",
            ]
