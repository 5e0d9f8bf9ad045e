"""Detection by extension and magic, the --no-parse switch, and the dtype helpers."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from tvc.errors import FormatError, PathError
from tvc.formats import itemsize, numpy_dtype, parse_file
from tvc.formats.dtypes import SAFETENSORS_DTYPES, bits


def test_missing_file_and_directory_are_path_errors(tmp_path):
    with pytest.raises(PathError, match=r"nope\.safetensors"):
        parse_file(tmp_path / "nope.safetensors")
    with pytest.raises(PathError, match="not a regular file"):
        parse_file(tmp_path)


@pytest.mark.parametrize("name", ["README.md", "model.onnx", "weights.npy", "noext"])
def test_unknown_files_are_one_opaque_segment(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x80\x04 hello, not parsed" * 10)

    layout = parse_file(path)

    assert layout.format == "opaque"
    assert [(s.offset, s.length, s.tensor) for s in layout.segments] == [(0, 200, None)]


def test_no_parse_makes_everything_opaque(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(path))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage")

    assert parse_file(path, parse=False).format == "opaque"
    assert parse_file(broken, parse=False).size == 7
    with pytest.raises(FormatError):
        parse_file(broken)


def test_extension_is_case_insensitive(tmp_path):
    path = tmp_path / "M.SafeTensors"
    save_file({"a": np.zeros(3, np.float32)}, str(path))

    assert parse_file(path).format == "safetensors"


def test_itemsize_and_numpy_dtype():
    sizes = {"F64": 8, "F32": 4, "BF16": 2, "F8_E4M3": 1, "BOOL": 1, "C64": 8, "U16": 2}
    assert {d: itemsize(d) for d in sizes} == sizes
    assert [itemsize(d) for d in ("F4", "F6_E2M3", "Q4_K", "Q8_0", "nonsense", None)] == [0] * 6
    assert numpy_dtype("F32") == np.dtype("<f4")
    assert numpy_dtype("BOOL") == np.dtype(bool)
    assert numpy_dtype("BF16") is None
    assert numpy_dtype("Q4_K") is None
    assert all(bits(d) for d in SAFETENSORS_DTYPES)
    for d in SAFETENSORS_DTYPES:
        nd = numpy_dtype(d)
        assert nd is None or nd.itemsize == itemsize(d)
