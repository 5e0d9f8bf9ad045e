"""Shared helpers for the formats tests: hostile-input checks and byte mutations."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import pytest

from tvc.errors import FormatError
from tvc.formats import Layout


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that outlives one test, for Hypothesis examples (tmp_path is per test)."""
    return tmp_path_factory.mktemp("formats")


@pytest.fixture(scope="session")
def safetensors_blob() -> Callable[[dict, bytes], bytes]:
    """Build safetensors bytes from a header (dict, or raw bytes) and a data region."""

    def build(header: dict | bytes, data: bytes = b"") -> bytes:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + data

    return build


@pytest.fixture(scope="session")
def expect_format_error() -> Callable[..., str]:
    """Run ``parse(path)``; it must raise FormatError with one line naming the file."""

    def check(path: Path, parse: Callable[[Path], Layout], match: str | None = None) -> str:
        with pytest.raises(FormatError) as info:
            parse(path)
        message = str(info.value)
        assert str(path) in message
        assert "\n" not in message
        assert len(message) < 600, message
        if match is not None:
            assert match in message, message
        return message

    return check


@pytest.fixture(scope="session")
def check_layout() -> Callable[[Layout, bytes], None]:
    """Assert what every parser promises of a layout it returns."""

    def check(layout: Layout, blob: bytes) -> None:
        layout.check()
        assert layout.size == len(blob)
        for seg in layout.segments:
            assert seg.length > 0
            assert seg.offset + seg.length <= len(blob)
        for t in layout.tensors:
            assert t.offset >= 0 and t.offset + t.length <= len(blob)
        names = [s.tensor for s in layout.segments if s.tensor is not None]
        assert len(names) == len(set(names))
        json.dumps(layout.metadata, allow_nan=False)  # the repo layer stores it as JSON

    return check


@pytest.fixture(scope="session")
def mutate() -> Callable[[st.DataObject, bytes], bytes]:
    """Draw a damaged copy of ``blob``: bit flips (``^ 0xFF``-style xor), cuts, splices.

    Writing a fixed byte is a no-op whenever the byte already had that value; xor with a
    non-zero mask always changes it.
    """

    def damage(data: st.DataObject, blob: bytes) -> bytes:
        out = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 4), label="n_mutations")):
            kind = data.draw(st.sampled_from(["xor", "truncate", "insert", "delete"]))
            if not out:
                break
            # Half the time aim at the first bytes, where the headers are.
            head = st.integers(0, min(len(out), 256) - 1)
            at = data.draw(st.one_of(head, st.integers(0, len(out) - 1)), label="at")
            if kind == "xor":
                out[at] ^= data.draw(st.integers(1, 255), label="mask")
            elif kind == "truncate":
                del out[at:]
            elif kind == "insert":
                out[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
            else:
                del out[at : at + data.draw(st.integers(1, 16), label="count")]
        return bytes(out)

    return damage
