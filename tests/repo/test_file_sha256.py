"""Each committed file's SHA-256 is recorded in its manifest (the Hugging Face endpoint's ETag),
for small files (read whole) and large ones (streamed in chunks); manifests without it (made
before it was recorded) keep their canonical form and id."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given
from hypothesis import strategies as st

from tvc.repo.manifest import Manifest, TensorEntry

from repo_helpers import make_model_dir


def test_commit_records_the_sha256_of_small_and_large_files(registry, tmp_path):
    out = tmp_path / "out"
    make_model_dir(out, n_layers=3, width=256)  # model.safetensors > 64 KiB: the chunked path
    (out / "big.bin").write_bytes(os.urandom(3 << 20))  # CDC
    (out / "empty.txt").write_bytes(b"")
    v = registry.commit("m", [out], "x", detect_code=False)
    assert (out / "model.safetensors").stat().st_size > 64 * 1024
    for fe in v.files:
        want = hashlib.sha256((out / fe.path).read_bytes()).hexdigest()
        assert registry.manifest(fe.manifest_id).sha256 == want, fe.path


manifests = st.builds(
    Manifest,
    size=st.integers(0, 2**40),
    digest=st.text("0123456789abcdef", min_size=64, max_size=64),
    format=st.sampled_from(["raw", "safetensors", "gguf"]),
    chunks=st.lists(
        st.tuples(st.text("0123456789abcdef", min_size=64, max_size=64), st.integers(1, 2**30)),
        max_size=5,
    ),
    tensors=st.lists(
        st.builds(
            TensorEntry,
            st.text(max_size=8),
            st.just("F32"),
            st.tuples(st.integers(0, 9)),
            st.integers(0, 99),
            st.integers(0, 99),
        ),
        max_size=3,
    ),
    metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    sha256=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
)


@given(manifests)
def test_manifest_round_trips_with_and_without_sha256(m):
    back = Manifest.decode(m.encode(), m.id)
    assert back.sha256 == m.sha256 and back.id == m.id
    if m.sha256 is None:
        assert b"sha256" not in m.canonical()  # the form (and id) of older manifests
