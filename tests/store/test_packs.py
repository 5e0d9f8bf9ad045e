from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvc.errors import IntegrityError
from tvc.store import hashing
from tvc.store.packs import MAGIC, PackWriter, iter_entries


@settings(max_examples=30)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_pack_roundtrip(tmp_path_factory, payloads):
    w = PackWriter(tmp_path_factory.mktemp("staging"))
    for i, p in enumerate(payloads):
        w.add(hashing.digest(p + bytes([i])), p, len(p), 0, None, 0, len(p))
    digest = w.finish()
    blob = w.path.read_bytes()
    assert hashing.digest(blob) == digest
    got = [(e.id, bytes(view)) for e, view in iter_entries(blob)]
    assert got == [(e.id, p) for e, p in zip(w.entries, payloads, strict=True)]
    w.discard()


def test_truncated_pack_detected(tmp_path):
    w = PackWriter(tmp_path)
    w.add(hashing.digest(b"abc"), b"abc", 3, 0, None, 0, 3)
    w.finish()
    blob = w.path.read_bytes()
    for cut in (len(MAGIC) + 5, len(blob) - 1):
        with pytest.raises(IntegrityError):
            list(iter_entries(blob[:cut]))
    with pytest.raises(IntegrityError):
        list(iter_entries(b"NOTAPACK" + blob[8:]))


@settings(max_examples=30)
@given(
    st.lists(
        st.tuples(st.binary(max_size=200), st.sampled_from([0, 1, 2]), st.booleans()),
        max_size=8,
    )
)
def test_trailer_lists_every_entry_with_its_kind(tmp_path_factory, items):
    """A pack describes itself: its trailer (read with two small ranged reads) gives every
    entry with its kind and plain length, the same entries a full walk finds."""
    from tvc.store.backends import MemoryBackend
    from tvc.store.packs import pack_object_name, read_pack_index

    w = PackWriter(tmp_path_factory.mktemp("staging"))
    for i, (payload, kind, delta) in enumerate(items):
        cid = hashing.digest(payload + bytes([i]))
        base = hashing.digest(b"base") if delta else None
        w.add(cid, payload, len(payload) + 1, 0, base, int(delta), len(payload) + 2, kind)
    name = pack_object_name(w.finish())
    backend = MemoryBackend()
    backend.put(name, w.path.read_bytes())
    listed = read_pack_index(backend, name)
    assert listed == w.entries
    walked = [e for e, _view in iter_entries(backend.get(name))]
    assert walked == w.entries
    w.discard()


@settings(max_examples=60)
@given(st.data())
def test_a_damaged_trailer_or_footer_is_an_integrity_error(tmp_path_factory, data):
    w = PackWriter(tmp_path_factory.mktemp("staging"))
    for i in range(3):
        w.add(hashing.digest(bytes([i])), bytes([i]) * 10, 10, 0, None, 0, 10, i % 3)
    w.finish()
    blob = bytearray(w.path.read_bytes())
    trailer_start = w.entries[-1].offset + w.entries[-1].stored_len
    pos = data.draw(st.integers(trailer_start, len(blob) - 1))
    blob[pos] ^= 0xFF
    try:
        walked = [e for e, _view in iter_entries(bytes(blob))]
    except IntegrityError:
        return
    # a flip that the walk accepts can only be in a field the entry headers do not repeat
    assert [(e.id, e.offset, e.stored_len) for e in walked] == [
        (e.id, e.offset, e.stored_len) for e in w.entries
    ]
    w.discard()


def test_store_urls_with_an_unknown_scheme_are_refused(tmp_path):
    from tvc.errors import UsageError
    from tvc.repo import db
    from tvc.store.backends import LocalBackend, open_backend

    bad_s3 = ("s3://", "s3://Bad_Bucket/x", "s3://b1b/p?secret=x", "s3://b1b/../x")
    for url in (*bad_s3, "gs://b", "ftp://host/x", "http://h/x"):
        with pytest.raises(UsageError):
            open_backend(url, base=tmp_path)
    assert not (tmp_path / "s3:").exists()
    assert isinstance(open_backend("objects", base=tmp_path), LocalBackend)
    assert isinstance(open_backend(f"file://{tmp_path / 'o'}"), LocalBackend)
    for url in ("mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "oracle://x"):
        with pytest.raises(UsageError):
            db.normalize_url(url, tmp_path)
    assert db.normalize_url("postgresql://u@h/db", tmp_path).startswith("postgresql+psycopg://")
