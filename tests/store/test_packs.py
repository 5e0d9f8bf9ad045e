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
