"""The cold read path of ``tvc log`` answers exactly what the full path does, or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import tvc
from tvc.errors import TvcError
from tvc.repo import coldread

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.sampled_from(["main", "dev", "exp/a"])),
        st.tuples(st.just("branch"), st.sampled_from(["dev", "exp/a", "v2x"])),
        st.tuples(st.just("tag"), st.sampled_from(["t1", "dev", "production"])),
        st.tuples(st.just("alias"), st.sampled_from(["production", "t1"])),
        st.tuples(st.just("merge"), st.sampled_from(["dev", "exp/a"])),
        st.tuples(st.just("rm"), st.integers(1, 6)),
        st.tuples(st.just("metric"), st.integers(1, 6)),
    ),
    min_size=1,
    max_size=8,
)
REVS = st.one_of(
    st.sampled_from(["main", "dev", "exp/a", "t1", "production", "v2x", "nope", "zz"]),
    st.integers(0, 8).map(lambda n: f"v{n}"),
    st.sampled_from(["main~1", "dev~2", "v3~1", "production~1"]),
)


def _full(reg, ref, n):
    try:
        versions = reg.log(ref, n)
    except TvcError:
        return None
    return [(v.to_json() | {"files": []}, reg.refs_pointing_at(v)) for v in versions]


def _apply(reg, op, k):
    kind, arg = op
    if kind == "commit":
        d = Path(tempfile.mkdtemp(dir=reg.root))
        (d / "w.txt").write_text(f"{k}")
        reg.commit("m", [d / "w.txt"], f"c{k}", branch=arg, metrics={"k": k})
    elif kind == "branch":
        reg.branch("m", arg, "main")
    elif kind == "tag":
        reg.tag("m", arg, "main")
    elif kind == "alias":
        reg.set_alias("m", arg, "main")
    elif kind == "merge":
        reg.merge("m@main", f"m@{arg}", strategy="ours", message=f"merge {k}")
    elif kind == "rm":
        reg.rm(f"m@v{arg}", force=True)
    elif kind == "metric":
        reg.add_metrics(f"m@v{arg}", {"late": k})


@settings(max_examples=12)
@given(ops=OPS, revs=st.lists(REVS, min_size=1, max_size=6), n=st.none() | st.integers(0, 4))
def test_cold_log_is_the_full_log(ops, revs, n):
    with tempfile.TemporaryDirectory() as tmp:
        reg = tvc.Registry.init(Path(tmp) / "reg")
        try:
            d = Path(tmp) / "f"
            d.mkdir()
            (d / "w.txt").write_text("base")
            reg.commit("m", [d / "w.txt"], "base")
            for k, op in enumerate(ops):
                try:
                    _apply(reg, op, k)
                except TvcError:
                    pass  # an op the history does not allow: the history stays as it was
            for rev in ["main", *revs]:
                ref = f"m@{rev}"
                quick = coldread.log(reg.root, ref, n)
                full = _full(reg, ref, n)
                if rev == "main" and full is not None:  # the common case is answered here
                    assert quick is not None
                if quick is not None:
                    assert [(v.to_json(), refs) for v, refs in quick] == full, ref
        finally:
            reg.close()


def test_it_steps_aside_for_what_the_full_path_must_say(registry, tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("x")
    registry.commit("m", [f], "one")
    assert coldread.log(registry.root, "m", None) is not None
    for ref in ("m@nope", "other", "m@v9", "Bad Name"):
        assert coldread.log(registry.root, ref, None) is None
    with registry.meta.write() as conn:  # a DB the code must migrate first
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0002'")
    assert coldread.log(registry.root, "m", None) is None


def test_tvc_log_does_not_load_sqlalchemy(registry, tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("x")
    registry.commit("m", [f], "one")
    run = subprocess.run(  # -X importtime lists every module the command loads, on stderr
        [sys.executable, "-X", "importtime", "-m", "tvc", "log", "m"],
        cwd=registry.root,
        capture_output=True,
        text=True,
        env={**os.environ, "TVC_DAEMON": "0"},
        check=True,
    )
    assert "m@v1" in run.stdout
    loaded = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()}
    assert "tvc.repo.coldread" in loaded  # (the probe works)
    assert not {"sqlalchemy", "numpy", "alembic"} & loaded
