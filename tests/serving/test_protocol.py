"""The OIP v2 codec: what ``encode`` writes, ``decode`` reads back exactly (JSON and binary);
any other bytes are refused with InferenceInputError and nothing else."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tvc.errors import InferenceInputError
from tvc.serving import protocol

NUMERIC = [d for d in protocol.DTYPES if d not in ("BYTES", "FP16")]


@st.composite
def tensors(draw):
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    if datatype == "BYTES":
        n = int(np.prod(shape))
        items = draw(st.lists(st.binary(max_size=12), min_size=n, max_size=n))
        arr = np.empty(n, dtype=object)
        arr[:] = items
        return datatype, arr.reshape(shape)
    dtype = protocol.DTYPES[datatype]
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


def as_request(response: bytes, header: int | None) -> tuple[bytes, int | None]:
    """A response's outputs rewritten as a request's inputs (same bytes after the header)."""
    head = json.loads(response[:header] if header else response)
    doc = {"inputs": head["outputs"]}
    new = json.dumps(doc).encode()
    if header is None:
        return new, None
    return new + response[header:], len(new)


@given(st.lists(tensors(), min_size=1, max_size=3), st.booleans())
def test_encode_then_decode_is_exact(items, binary):
    outputs = {f"t{i}": arr for i, (_dt, arr) in enumerate(items)}
    if not binary:  # JSON carries BYTES as text: only UTF-8 round-trips
        for name, (dt, arr) in zip(outputs, items, strict=True):
            if dt == "BYTES":
                outputs[name] = np.vectorize(lambda b: b.hex().encode(), otypes=[object])(arr)
    body, header = protocol.encode("m", "v1", outputs, binary={"*"} if binary else set())
    assert (header is not None) == binary
    req = protocol.decode(*as_request(body, header))
    assert list(req.inputs) == list(outputs)
    for name, arr in outputs.items():
        got = req.inputs[name]
        assert got.shape == arr.shape
        assert req.datatypes[name] == protocol.datatype_of(arr.dtype)
        if arr.dtype == object:
            assert got.tolist() == arr.tolist()
        else:
            np.testing.assert_array_equal(got, arr)
            assert got.dtype == arr.dtype


@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(-5, 400)))
def test_arbitrary_bytes_are_refused_cleanly(body, header):
    try:
        protocol.decode(body, header)
    except InferenceInputError as exc:
        assert "\n" not in exc.message


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=4),
            "datatype": st.sampled_from([*protocol.DTYPES, "FP8", 3]),
            "shape": JSONISH,
            "data": JSONISH,
        }
    )
)
def test_hostile_inputs_are_refused_cleanly(item):
    try:
        req = protocol.decode(json.dumps({"inputs": [item]}).encode())
    except InferenceInputError:
        return
    arr = req.inputs[item["name"]]
    assert list(arr.shape) == item["shape"]


def test_nested_and_flat_data_read_alike():
    flat = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    nested = {
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]
    }
    a = protocol.decode(json.dumps(flat).encode()).inputs["x"]
    b = protocol.decode(json.dumps(nested).encode()).inputs["x"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "item, fragment",
    [
        ({"datatype": "INT8", "shape": [1], "data": [300]}, "out of INT8's range"),
        ({"datatype": "INT64", "shape": [1], "data": [1.5]}, "must be integers"),
        ({"datatype": "BOOL", "shape": [1], "data": [1]}, "true or false"),
        ({"datatype": "FP32", "shape": [1 << 20, 1 << 20], "data": []}, "too large"),
        ({"datatype": "FP32", "shape": [-1], "data": []}, "sizes >= 0"),
        ({"datatype": "BYTES", "shape": [1], "data": [3]}, "must be strings"),
    ],
)
def test_refusals_say_what_is_wrong(item, fragment):
    with pytest.raises(InferenceInputError, match=fragment):
        protocol.decode(json.dumps({"inputs": [{"name": "x", **item}]}).encode())


def test_binary_sizes_are_checked():
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    assert protocol.decode(head + bytes(8), len(head)).inputs["x"].tolist() == [0.0, 0.0]
    with pytest.raises(InferenceInputError, match="exceeds the body"):
        protocol.decode(head + bytes(4), len(head))
    with pytest.raises(InferenceInputError, match="bytes after the last binary input"):
        protocol.decode(head + bytes(12), len(head))
    with pytest.raises(InferenceInputError, match="without Inference-Header-Content-Length"):
        protocol.decode(head)
