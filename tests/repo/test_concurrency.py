"""Short locks: only the metadata transaction is serialized, on SQLite and on PostgreSQL.

A commit hashes, encodes and writes its packs with no lock held, so an alias move or a
rollback proceeds while it runs; several processes committing to one branch at once all land,
in one linear history, with unique version numbers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

import tvc

from conftest_helpers import registry_on
from repo_helpers import make_model_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def root(request, tmp_path):
    """A registry directory, with its metadata on SQLite or on a real PostgreSQL."""
    if request.param == "sqlite":
        tvc.Registry.init(tmp_path / "reg").close()
    else:
        registry_on(request.getfixturevalue("pg_url"), tmp_path / "reg").close()
    return tmp_path / "reg"


class Gate:
    """A progress sink that holds a commit in the middle of storing its bytes."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        self.reached.set()
        assert self.release.wait(60), "the test never released the commit"

    def finish(self) -> None:
        pass


def test_alias_moves_and_rollbacks_while_another_commit_is_storing(root, tmp_path):
    reg = tvc.Registry(root)
    make_model_dir(tmp_path / "a", seed=1)
    make_model_dir(tmp_path / "b", seed=2)
    reg.commit("served", [tmp_path / "a"], "v1")
    reg.commit("served", [tmp_path / "b"], "v2")
    gate = Gate()
    result: dict = {}

    def big_commit() -> None:
        with tvc.Registry(root) as other:
            result["v"] = other.commit("big", [tmp_path / "a"], "held", progress=gate)

    t = threading.Thread(target=big_commit)
    t.start()
    try:
        assert gate.reached.wait(60)
        # The other commit is in the middle of storing: none of these may wait for it.
        reg.alias("served", "production", "v2")
        reg.alias("served", "production", "v1")
        event = reg.rollback("served", "production")
        assert event.new == "served@v2"
        reg.tag("served", "t1", "v1")
        assert t.is_alive()  # still held: the moves above did not wait for it
    finally:
        gate.release.set()
        t.join(60)
    assert result["v"].ref == "big@v1"
    assert reg.resolve("served@production").number == 2
    assert reg.fsck(read_data=True)["ok"]
    reg.close()


WRITER = textwrap.dedent(
    """
    import sys, tvc
    root, model, src, n, tag = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    reg = tvc.Registry(root)
    for i in range(n):
        v = reg.commit(model, [src], f"{tag} {i}", params={"writer": tag, "i": i})
        print(v.id, flush=True)
    reg.close()
    """
)


def test_concurrent_commits_to_one_branch_all_land_in_a_linear_history(root, tmp_path):
    srcs = []
    for k in range(3):
        make_model_dir(tmp_path / f"src{k}", seed=10 + k, n_layers=3, width=128)
        srcs.append(tmp_path / f"src{k}")
    n = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), "m", str(srcs[k]), str(n), f"w{k}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    other = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "other", str(srcs[0]), str(n), "o"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked = []
    for p in [*procs, other]:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        acked += out.split()
    with tvc.Registry(root) as reg:
        log = reg.log("m")
        assert sorted(v.number for v in log) == list(range(1, 3 * n + 1))
        by_number = {v.number: v for v in log}
        for number, v in by_number.items():  # linear: each version's parent is the one before
            assert list(v.parents) == ([by_number[number - 1].id] if number > 1 else [])
        assert len(reg.log("other")) == n
        assert {v.id for v in log} | {v.id for v in reg.log("other")} == set(acked)
        for v in log:
            k = int(v.params["writer"][1:])
            want = (srcs[k] / "model.safetensors").read_bytes()
            assert reg.read(v, "model.safetensors") == want
        assert reg.fsck(read_data=True)["ok"]


def test_a_new_branch_starts_at_the_head_main_has_when_it_is_recorded(tmp_path):
    """The commit that creates a branch re-parents on main's head if main moved meanwhile."""
    reg = tvc.Registry.init(tmp_path / "reg")
    make_model_dir(tmp_path / "a", seed=1, n_layers=2, width=32)
    make_model_dir(tmp_path / "b", seed=2, n_layers=2, width=32)
    v1 = reg.commit("m", [tmp_path / "a"], "v1")
    gate = Gate()
    out: dict = {}

    def on_new_branch() -> None:
        with tvc.Registry(reg.root) as other:
            out["v"] = other.commit("m", [tmp_path / "b"], "exp", branch="exp", progress=gate)

    t = threading.Thread(target=on_new_branch)
    t.start()
    assert gate.reached.wait(60)
    v2 = reg.commit("m", [tmp_path / "a"], "main moves on")
    gate.release.set()
    t.join(60)
    assert v2.parents == (v1.id,)
    assert out["v"].parents == (v2.id,)  # not v1: the branch starts where main is now
    assert reg.resolve("m@exp").id == out["v"].id
    reg.close()
