"""lazyfs's two states without FUSE: random operations, then what the disk must hold.

Properties, for any sequence of creates, writes at any offset, truncates, renames, unlinks,
mkdirs, rmdirs and fsyncs, under both models:
* syncing everything (each directory top down, each file) makes the disk equal the live tree;
* what the disk holds at any moment, loaded again (the next boot), is a tree whose every file
  holds content some fsync of it made durable (or is empty, never synced).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from powerloss import lazyfs

DIRS = ["", "d"]  # few names: operations meet the same files and directories often
NAMES = ["a", "d"]  # (d/d nests)
paths = st.builds(
    lambda d, n: f"{d}/{n}".lstrip("/"), st.sampled_from(DIRS), st.sampled_from(NAMES)
)
ops = st.one_of(
    st.tuples(st.just("mkdir"), paths),
    st.tuples(
        st.just("write"),
        paths,
        st.integers(0, 40),
        st.binary(min_size=1, max_size=20),
        st.booleans(),
    ),
    st.tuples(st.just("truncate"), paths, st.integers(0, 30)),
    st.tuples(st.just("rename"), paths, paths),
    st.tuples(st.just("unlink"), paths),
    st.tuples(st.just("rmdir"), paths),
    st.tuples(st.just("fsyncdir"), st.sampled_from(DIRS)),
)


def apply(state: lazyfs.LazyState, op: tuple, synced: dict[str, set[bytes]]) -> None:
    kind, path, *args = op
    with contextlib.suppress(OSError):
        if kind == "mkdir":
            state.mkdir(path, 0o755)
        elif kind == "write":
            offset, data, sync = args
            fh = state.create(path, 0o644)
            try:
                state.write(fh, data, offset)
                if sync:
                    state.fsync(fh)
                    synced.setdefault(path, set()).add(state.read(fh, 1 << 20, 0))
            finally:
                state.release(fh)
        elif kind == "truncate":
            state.truncate(path, args[0], None)
        elif kind == "rename":
            state.rename(path, args[0])
        elif kind == "unlink":
            state.unlink(path)
        elif kind == "rmdir":
            state.rmdir(path)
        elif kind == "fsyncdir":
            fh = state.opendir(path)
            try:
                state.fsync(fh)
            finally:
                state.release(fh)


def live_tree(state: lazyfs.LazyState, path: str = "") -> dict[str, bytes | None]:
    """path -> content (None for a directory), as processes see it."""
    out: dict[str, bytes | None] = {}
    for name in state.readdir(path)[2:]:
        child = f"{path}/{name}".lstrip("/")
        node = state.inodes[state.lookup(child)]
        if node.kind == "dir":
            out[child] = None
            out.update(live_tree(state, child))
        else:
            out[child] = bytes(node.live)
    return out


def disk_tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def sync_everything(state: lazyfs.LazyState, path: str = "") -> None:
    fh = state.opendir(path)
    state.fsync(fh)
    state.release(fh)
    for name in state.readdir(path)[2:]:
        child = f"{path}/{name}".lstrip("/")
        if state.inodes[state.lookup(child)].kind == "dir":
            sync_everything(state, child)
        else:
            fh = state.open(child, os.O_RDONLY)
            state.fsync(fh)
            state.release(fh)


@settings(max_examples=300)
@given(st.sampled_from(lazyfs.MODELS), st.lists(ops, max_size=30))
def test_durable_state_is_synced_content_and_a_full_sync_is_the_live_tree(model, sequence):
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp)
        state = lazyfs.LazyState(disk, model)
        synced: dict[str, set[bytes]] = {}
        for op in sequence:
            apply(state, op, synced)
            # the next boot finds only content some fsync made durable, under some name
            every_synced = set().union(*synced.values()) | {b""}
            for rel, content in disk_tree(disk).items():
                assert content is None or content in every_synced, (rel, content)
        sync_everything(state)
        assert disk_tree(disk) == live_tree(state)
        assert live_tree(lazyfs.LazyState(disk, model)) == live_tree(state)  # the next boot


def test_an_unknown_name_is_enoent(tmp_path):
    state = lazyfs.LazyState(tmp_path)
    try:
        state.lookup("nope/x")
    except OSError as exc:
        assert exc.errno == errno.ENOENT
    else:
        raise AssertionError("lookup of a missing name should fail")
