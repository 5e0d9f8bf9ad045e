"""The chunker: exact tiling, tensor-aligned pieces, content-defined opaque cuts."""

from __future__ import annotations

import mmap

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from tvc.errors import FormatError
from tvc.formats import PIECE_SIZE, ChunkSpec, Layout, Segment, iter_chunks, parse_file
from tvc.formats.chunking import CDC_MAX, CDC_MIN


def _bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _layout(parts: list[tuple[str | None, int]]) -> Layout:
    """A layout from (tensor name or None, length) parts, in file order."""
    segments, pos = [], 0
    for name, length in parts:
        dtype = "F32" if name else None
        segments.append(Segment(pos, length, name, dtype, 4 if name else 0))
        pos += length
    layout = Layout("test", pos, segments)
    layout.check()
    return layout


_parts = st.lists(
    st.one_of(
        st.tuples(st.just("tensor"), st.integers(0, 6000)),
        st.tuples(st.none(), st.integers(1, 3000)),
        st.tuples(st.none(), st.integers(CDC_MIN, 3 * CDC_MIN)),  # long enough to CDC-cut
    ),
    max_size=8,
)


@settings(max_examples=80, deadline=None)
@given(parts=_parts, piece_size=st.integers(64, 4096), seed=st.integers(0, 2**16))
def test_chunks_tile_the_file_and_align_to_tensors(parts, piece_size, seed):
    parts = [(f"t{i}" if name else None, n) for i, (name, n) in enumerate(parts)]
    layout = _layout(parts)
    buf = _bytes(layout.size, seed)

    chunks = list(iter_chunks(buf, layout, piece_size=piece_size))

    pos = 0
    for c in chunks:
        assert c.offset == pos and c.length > 0
        pos += c.length
    assert pos == len(buf)
    for seg in layout.segments:
        mine = [c for c in chunks if seg.offset <= c.offset < seg.offset + seg.length]
        if seg.tensor is None:
            assert all(c.tensor is None and c.piece == 0 and c.itemsize == 0 for c in mine)
            if seg.length < CDC_MIN:
                assert len(mine) == 1
            assert all(c.length <= CDC_MAX for c in mine)
            assert all(c.length >= CDC_MIN for c in mine[:-1])
            continue
        assert [c.piece for c in mine] == list(range(len(mine)))
        assert all(c.offset == seg.offset + c.piece * piece_size for c in mine)
        assert all(c.length == piece_size for c in mine[:-1])
        assert sum(c.length for c in mine) == seg.length
        assert all((c.tensor, c.dtype, c.itemsize) == (seg.tensor, "F32", 4) for c in mine)


@settings(max_examples=40, deadline=None)
@given(
    before=st.integers(0, 5000),
    grown=st.integers(1, 3000),
    size=st.integers(1, 9000),
    piece_size=st.integers(64, 1024),
)
def test_pieces_line_up_when_other_tensors_move(before, grown, size, piece_size):
    """Piece k of a tensor holds the same bytes after an earlier tensor grew."""
    payload = _bytes(size, 1)
    old = _layout([(None, 100), ("a", before), ("b", size)])
    new = _layout([(None, 100), ("a", before + grown), ("b", size)])
    old_buf = _bytes(100 + before, 2) + payload
    new_buf = _bytes(100 + before + grown, 3) + payload

    def pieces(buf, layout):
        return [
            bytes(buf[c.offset : c.offset + c.length])
            for c in iter_chunks(buf, layout, piece_size=piece_size)
            if c.tensor == "b"
        ]

    assert pieces(old_buf, old) == pieces(new_buf, new)


def test_editing_one_tensor_changes_only_its_piece():
    layout = _layout([(None, 200), ("a", 5000), ("b", 5000), (None, 50)])
    buf = bytearray(_bytes(layout.size, 4))
    specs = list(iter_chunks(buf, layout, piece_size=1024))
    before = [bytes(buf[c.offset : c.offset + c.length]) for c in specs]

    buf[200 + 5000 + 2 * 1024 + 17] ^= 0xFF  # a byte in piece 2 of tensor b

    assert list(iter_chunks(buf, layout, piece_size=1024)) == specs
    changed = [
        (c.tensor, c.piece)
        for c, old in zip(specs, before, strict=True)
        if bytes(buf[c.offset : c.offset + c.length]) != old
    ]
    assert changed == [("b", 2)]


def test_cdc_resynchronizes_after_an_insertion():
    base = _bytes(1 << 20, 5)
    edited = base[:300_000] + b"inserted!" + base[300_000:]

    def cut(buf):
        layout = _layout([(None, len(buf))])
        return {bytes(buf[c.offset : c.offset + c.length]) for c in iter_chunks(buf, layout)}

    old, new = cut(base), cut(edited)
    assert len(old) > 4
    assert len(new - old) <= 3  # only the chunks around the insertion differ


def test_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    layout = parse_file(path)

    assert layout.segments == []
    assert list(iter_chunks(b"", layout)) == []


def test_zero_length_tensors_have_no_chunk():
    layout = _layout([(None, 10), ("empty", 0), ("t", 8)])

    chunks = list(iter_chunks(bytes(18), layout))

    assert [c.tensor for c in chunks] == [None, "t"]


def test_defaults():
    layout = _layout([("big", PIECE_SIZE + 5)])

    chunks = list(iter_chunks(bytes(layout.size), layout))

    assert chunks == [
        ChunkSpec(0, PIECE_SIZE, "big", 0, "F32", 4),
        ChunkSpec(PIECE_SIZE, 5, "big", 1, "F32", 4),
    ]


def test_buffer_must_match_layout():
    layout = _layout([(None, 10)])

    with pytest.raises(FormatError, match="did it change"):
        list(iter_chunks(bytes(9), layout))
    with pytest.raises(ValueError):
        list(iter_chunks(bytes(10), layout, piece_size=0))


def test_caller_can_close_its_mmap_after_stopping_early(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(_bytes(300_000, 6))
    layout = parse_file(path)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        gen = iter_chunks(mm, layout)
        first = next(gen)
        gen.close()
        mm.close()  # raises BufferError if a view into the map were still alive

    assert first.offset == 0 and first.tensor is None


def test_real_safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    arrays = {"a": np.arange(3000, dtype=np.float32), "b": np.ones(10, np.int16)}
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path))
    buf = path.read_bytes()

    chunks = list(iter_chunks(buf, parse_file(path), piece_size=4096))

    a = [c for c in chunks if c.tensor == "a"]
    assert b"".join(buf[c.offset : c.offset + c.length] for c in a) == arrays["a"].tobytes()
    assert [c.length for c in a] == [4096, 4096, 12000 - 8192]


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=300_000), st.integers(40_000, 200_000))
def test_windowed_cdc_cuts_where_one_pass_cuts(data, window):
    """Opaque bytes are read in windows, never mapped; the cuts must not depend on the
    window size (FastCDC restarts at a certain cut)."""
    from tvc.formats import chunking, opaque_layout

    layout = opaque_layout(len(data))
    old = chunking.CDC_WINDOW
    whole = list(iter_chunks(data, layout))
    chunking.CDC_WINDOW = window
    try:
        windowed = list(iter_chunks(lambda off, n: data[off : off + n], layout, size=len(data)))
    finally:
        chunking.CDC_WINDOW = old
    assert windowed == whole


def test_a_file_that_shrinks_while_it_is_cut_is_an_error_not_a_crash():
    from tvc.errors import FormatError
    from tvc.formats import opaque_layout

    data = bytes(range(256)) * 4000
    layout = opaque_layout(len(data))
    with pytest.raises(FormatError, match="changed"):
        list(iter_chunks(lambda off, n: data[off : off + n // 2], layout, size=len(data)))
