"""The receiver's parser of transfer packs against mutated packs (Hypothesis): whatever the
bytes, it refuses them with an IntegrityError and stores nothing, or every object it indexed
reads back verified. And the token lifetime parser."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import tvc
from tvc.errors import IntegrityError, UsageError
from tvc.remote import objects, record
from tvc.server.tokens import parse_duration
from tvc.store import hashing, index

from repo_helpers import make_model_dir


@pytest.fixture(scope="module")
def pack_bytes(tmp_path_factory) -> bytes:
    root = tmp_path_factory.mktemp("fuzz")
    a = tvc.Registry.init(root / "a")
    for i in range(2):
        make_model_dir(root / "out", seed=3, n_layers=2, width=32, changed=tuple(range(i)))
        a.commit("m", [root / "out"], f"v{i}", detect_code=False)
    ids = record.objects_of(a, [v.id for v in a.log("m")])
    rows = objects.with_bases(a.engine, ids)
    name, path, _size = objects.write_pack(a, objects.send_order(rows, list(rows)), root)
    data = path.read_bytes()
    assert hashing.digest(data) == name
    a.close()
    return data


def indexed(reg) -> list[str]:
    with reg.meta.read() as conn:
        return [r[0] for r in conn.execute(sa.select(index.chunks.c.id))]


def receive(data: bytes) -> None:
    work = Path(tempfile.mkdtemp(prefix="tvc-fuzz-"))
    try:
        b = tvc.Registry.init(work / "b")
        path = work / "in.pack"
        path.write_bytes(data)
        try:
            got = objects.receive_pack(b, path, hashing.digest(data))
        except IntegrityError:
            assert indexed(b) == []
            assert not list((work / "b" / ".tvc" / "objects").rglob("*.pack"))
            return
        finally:
            assert not path.exists()  # consumed either way
        ids = indexed(b)
        assert len(ids) == got.new
        for i in ids:
            assert hashing.digest(bytes(b.store.read(i))) == i
        b.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@settings(max_examples=60)
@given(data=st.data())
def test_mutated_packs_are_refused_or_store_only_verified_objects(pack_bytes, data):
    blob = bytearray(pack_bytes)
    how = data.draw(st.sampled_from(["flip", "truncate", "splice", "garbage"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(blob) - 1))
            blob[at] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "splice":
        at = data.draw(st.integers(0, len(blob)))
        blob[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        blob = bytearray(data.draw(st.binary(max_size=256)))
    receive(bytes(blob))


@given(n=st.integers(0, 10**6), unit=st.sampled_from(["", "s", "m", "h", "d", "w"]))
def test_durations_parse_to_seconds(n, unit):
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}") == n * factor


@given(text=st.text(max_size=12))
def test_any_other_duration_is_a_usage_error(text):
    try:
        assert parse_duration(text) >= 0
    except UsageError:
        pass
