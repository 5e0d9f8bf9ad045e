"""Property tests for the two parsers of untrusted trees: commit's symlink resolver
(:func:`tvc.repo.paths.listing`) and checkout's record (``DEST/.tvc-checkout``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvc.errors import PathError
from tvc.repo import paths

NAMES = ["a", "b", "c"]
_rel = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
# Link targets: inside, up and out, absolute inside, absolute outside, loops, dangling.
_target = st.one_of(
    _rel,
    st.sampled_from([".", "..", "../..", "../a", "a/..", "../outside/secret", "x"]),
    _rel.map(lambda r: "@ROOT@/" + r),
    st.just("@OUT@/secret"),
    st.just("@OUT@"),
)
_op = st.tuples(st.sampled_from(["dir", "file", "link"]), _rel, _target)


def build(root: Path, ops) -> None:
    for kind, rel, target in ops:
        p = root / rel
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                p.mkdir()
            elif kind == "file":
                p.write_bytes(rel.encode())
            else:
                t = target.replace("@ROOT@", str(root)).replace("@OUT@", str(root.parent / "out"))
                p.symlink_to(t)
        except OSError:
            pass  # the random plan collided with itself: keep what exists


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=10))
def test_listing_never_leaves_the_tree_and_reads_what_it_names(ops):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "out").mkdir()
        (base / "out" / "secret").write_bytes(b"SECRET")
        root = base / "root"
        root.mkdir()
        build(root, ops)
        real_root = os.path.realpath(root)
        try:
            items = paths.listing([root])
        except PathError:
            return  # refused as a whole: nothing read
        for item in items:
            real = os.path.realpath(os.path.join(real_root, *item.parts))
            assert real == real_root or real.startswith(real_root + os.sep), item
            fd = paths.open_listed(item)
            try:
                data = os.pread(fd, 100, 0)
            finally:
                os.close(fd)
            assert data != b"SECRET"
            assert data == Path(real).read_bytes()
            # what a reader following the stored path itself finds is the same file
            assert os.path.samefile(os.path.join(root, item.rel), real)


@settings(max_examples=40, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids),
            max_leaves=12,
        ).map(lambda v: __import__("json").dumps({"files": v}).encode()),
    )
)
def test_any_record_is_read_or_ignored_never_a_crash(body):
    from tvc.repo.worktree import _read_record

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / ".tvc-checkout").write_bytes(body)
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            files, ok = _read_record(fd)
        finally:
            os.close(fd)
        assert ok or files == {}
        for entry in files.values():
            assert {"size", "digest", "mtime_ns", "ino", "racy"} <= set(entry)


def test_a_parse_error_names_the_real_file(registry, tmp_path):
    from tvc.errors import FormatError

    d = tmp_path / "model"
    d.mkdir()
    (d / "w.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(FormatError) as info:
        registry.commit("m", [d], "bad")
    assert str(d / "w.safetensors") in str(info.value) and "tvc-parse" not in str(info.value)


def test_a_killed_commits_temp_directory_goes_with_the_next_commit(registry, tmp_path, monkeypatch):
    import subprocess
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a process now dead
    dead.wait()
    stale = tmp / f"tvc-parse-{dead.pid}-x1"  # what a commit killed while parsing leaves
    stale.mkdir()
    (stale / "f.bin").symlink_to("/proc/self/fd/9")
    live = tmp / f"tvc-parse-{os.getpid()}-x2"  # a commit of a live process: not touched
    live.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.txt").write_bytes(b"w")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    registry.commit("m", [src], "x")
    assert os.listdir(tmp) == [live.name]
