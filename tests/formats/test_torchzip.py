"""The torch zip parser against real torch.save files, crafted archives and fuzzing."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from tvc.errors import FormatError, UnsafePickleError
from tvc.formats import parse_file

torch = pytest.importorskip("torch")


def _raw(t) -> bytes:
    """A contiguous tensor's bytes as torch.save stores them."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(10, 4),
        torch.nn.Linear(4, 3),
        torch.nn.BatchNorm1d(3),
    )


def test_state_dict_tensor_table(tmp_path, check_layout):
    sd = _model().state_dict()
    path = tmp_path / "model.pt"
    torch.save(sd, path)
    blob = path.read_bytes()

    layout = parse_file(path)

    check_layout(layout, blob)
    assert layout.format == "torch"
    assert layout.metadata["storages"] == len(sd)
    by_name = {t.name: t for t in layout.tensors}
    assert list(by_name) == list(sd)
    for name, tensor in sd.items():
        t = by_name[name]
        assert t.shape == tuple(tensor.shape)
        assert blob[t.offset : t.offset + t.length] == _raw(tensor)
    assert by_name["2.num_batches_tracked"].dtype == "I64"
    assert by_name["1.weight"].dtype == "F32"
    segs = {s.tensor: s for s in layout.segments if s.tensor}
    assert set(segs) == set(sd)
    assert segs["1.weight"].itemsize == 4


def test_views_shared_storage_and_nesting(tmp_path):
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd = collections.OrderedDict(
        w=w,
        wt=w.t(),  # a non-contiguous view of w's storage
        tail=w[1:],  # contiguous, at a storage offset
        tied=w,  # the same tensor under a second name
    )
    ckpt = {"model": sd, "optim": {"state": {0: {"step": torch.tensor(3.0)}}}, "epoch": 7}
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    blob = path.read_bytes()

    layout = parse_file(path)

    by_name = {t.name: t for t in layout.tensors}
    assert set(by_name) == {"model.w", "model.tail", "model.tied", "optim.state.0.step"}
    assert layout.metadata["noncontiguous"] == ["model.wt"]
    assert blob[by_name["model.tail"].offset :][: by_name["model.tail"].length] == _raw(w[1:])
    assert by_name["model.tail"].offset == by_name["model.w"].offset + 4 * 4
    assert by_name["model.tied"] == by_name["model.w"].__class__(
        "model.tied", "F32", (3, 4), by_name["model.w"].offset, 48
    )
    assert layout.metadata["storages"] == 2
    (w_seg,) = [s for s in layout.segments if s.tensor == "model.w"]
    assert (w_seg.offset, w_seg.length) == (by_name["model.w"].offset, 48)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        ("bfloat16", "BF16"),
        ("float16", "F16"),
        ("float64", "F64"),
        ("float8_e4m3fn", "F8_E4M3"),
        ("float8_e5m2", "F8_E5M2"),
        ("uint16", "U16"),
        ("int8", "I8"),
        ("bool", "BOOL"),
        ("complex64", "C64"),
    ],
)
def test_dtypes(tmp_path, dtype, name):
    t = torch.arange(6).to(getattr(torch, dtype))
    path = tmp_path / "t.bin"
    torch.save({"t": t}, path)
    blob = path.read_bytes()

    layout = parse_file(path)

    (info,) = layout.tensors
    assert (info.name, info.dtype, info.shape) == ("t", name, (6,))
    assert blob[info.offset : info.offset + info.length] == _raw(t)
    (seg,) = [s for s in layout.segments if s.tensor]
    assert seg.dtype == name  # untyped storages (float8, uint16) take their tensor's dtype


def test_bare_tensor_and_list(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.ones(3), path)
    assert [t.name for t in parse_file(path).tensors] == ["tensor"]
    torch.save([torch.ones(2), {"a": torch.zeros(1)}], path)
    assert [t.name for t in parse_file(path).tensors] == ["0", "1.a"]


def test_whole_module_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(_model(), path)

    with pytest.raises(UnsafePickleError) as info:
        parse_file(path)
    message = str(info.value)
    assert "torch.nn.modules.linear.Linear" in message
    assert "--allow-unsafe-pickle" in message
    assert str(path) in message

    layout = parse_file(path, allow_unsafe_pickle=True)

    assert layout.tensors == []
    assert "torch.nn.modules.linear.Linear" in layout.metadata["unsafe_imports"]
    stored = [s for s in layout.segments if s.tensor]
    assert len(stored) == layout.metadata["storages"] == len(_model().state_dict())
    assert all(s.dtype in ("F32", "I64") for s in stored)


class _Calls:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _zip(path, members: dict[str, bytes], compress: set[str] = frozenset()) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            method = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
            zf.writestr(name, data, compress_type=method)


def test_crafted_payload_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Calls(exec, f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "evil.pt"
    _zip(
        path,
        {"archive/data.pkl": pickle.dumps({"w": payload}, protocol=2), "archive/version": b"3\n"},
    )

    with pytest.raises(UnsafePickleError, match=r"builtins\.exec"):
        parse_file(path)
    layout = parse_file(path, allow_unsafe_pickle=True)

    assert not marker.exists()
    assert layout.metadata["unsafe_imports"] == ["builtins.exec"]


def test_os_system_in_constants_pickle_is_refused(tmp_path):
    """TorchScript-style archives carry more pickles than data.pkl; all are scanned."""
    import os

    path = tmp_path / "script.pt"
    _zip(
        path,
        {
            "archive/data.pkl": pickle.dumps({}, protocol=2),
            "archive/constants.pkl": pickle.dumps(_Calls(os.system, "true"), protocol=2),
        },
    )

    with pytest.raises(UnsafePickleError, match="system"):
        parse_file(path)


# --- crafted archives: a pickler that writes what torch.save writes, with our numbers ------


class _Storage:
    def __init__(self, key, numel, kind="FloatStorage"):
        self.key, self.numel, self.kind = key, numel, kind


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor):
            return torch._utils._rebuild_tensor_v2, obj.args
        return NotImplemented


def _craft(path, root, records: dict[str, bytes], compress: set[str] = frozenset()) -> None:
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(root)
    members = {
        "archive/data.pkl": buf.getvalue(),
        "archive/byteorder": b"little",
        "archive/version": b"3\n",
    }
    members.update({f"archive/data/{k}": v for k, v in records.items()})
    _zip(path, members, {f"archive/data/{k}" for k in compress})


def test_crafted_archive_parses_like_torch(tmp_path):
    s = _Storage("0", 6)
    path = tmp_path / "ok.pt"
    data = np.arange(6, dtype=np.float32).tobytes()
    _craft(path, {"a": _Tensor(s, 2, [2, 2], [2, 1])}, {"0": data})

    (t,) = parse_file(path).tensors

    assert (t.name, t.shape, t.length) == ("a", (2, 2), 16)
    assert path.read_bytes()[t.offset : t.offset + 16] == data[8:]
    loaded = torch.load(path, weights_only=True)
    assert loaded["a"].numpy().tobytes() == data[8:]


def test_compressed_storage_is_opaque(tmp_path):
    path = tmp_path / "zipped.pt"
    s0, s1 = _Storage("0", 2), _Storage("1", 2)
    _craft(
        path,
        {"a": _Tensor(s0, 0, [2], [1]), "b": _Tensor(s1, 0, [2], [1])},
        {"0": bytes(8), "1": bytes(8)},
        compress={"1"},
    )

    layout = parse_file(path)

    assert [t.name for t in layout.tensors] == ["a"]
    assert [s.tensor for s in layout.segments if s.tensor] == ["a"]


CRAFTED = {
    "missing record": lambda: ({"a": _Tensor(_Storage("0", 2), 0, [2], [1])}, {}),
    "short record": lambda: ({"a": _Tensor(_Storage("0", 4), 0, [4], [1])}, {"0": bytes(8)}),
    "tensor past storage": lambda: ({"a": _Tensor(_Storage("0", 2), 1, [2], [1])}, {"0": bytes(8)}),
    "strided past storage": lambda: (
        {"a": _Tensor(_Storage("0", 4), 0, [2, 2], [4, 1])},
        {"0": bytes(16)},
    ),
    "negative size": lambda: ({"a": _Tensor(_Storage("0", 2), 0, [-1], [1])}, {"0": bytes(8)}),
    "rank mismatch": lambda: ({"a": _Tensor(_Storage("0", 2), 0, [2], [1, 1])}, {"0": bytes(8)}),
    "storage two ways": lambda: (
        [_Tensor(_Storage("0", 2), 0, [2], [1]), _Tensor(_Storage("0", 3), 0, [2], [1])],
        {"0": bytes(12)},
    ),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_hostile_archive(tmp_path, expect_format_error, case):
    root, records = CRAFTED[case]()
    path = tmp_path / "bad.pt"
    _craft(path, root, records)

    expect_format_error(path, parse_file)


def test_not_a_storage_is_a_format_error(tmp_path, expect_format_error):
    path = tmp_path / "bad.pt"
    root = _Calls(torch._utils._rebuild_tensor_v2, "nope", 0, (1,), (1,), False, None)
    _zip(path, {"archive/data.pkl": pickle.dumps(root, protocol=2)})

    expect_format_error(path, parse_file, match="not a storage")


def test_truncated_and_broken_zips(tmp_path, expect_format_error):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(100)}, path)
    blob = path.read_bytes()

    path.write_bytes(blob[: len(blob) // 2])
    expect_format_error(path, parse_file, match="bad zip")
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    expect_format_error(path, parse_file, match="bad zip")


def test_other_zips_are_opaque(tmp_path):
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.arange(3))
    junk = tmp_path / "broken.zip"
    junk.write_bytes(b"PK\x03\x04" + bytes(100))

    assert parse_file(npz).format == "opaque"
    assert parse_file(junk).format == "opaque"


def test_legacy_torch_file_is_cut_at_its_storage_records(tmp_path, check_layout):
    # Legacy files were opaque (their raw storage bytes could even be taken for a pickle);
    # now their records are walked and each storage is a tensor segment, as in a zip.
    path = tmp_path / "legacy.pt"
    sd = _model().state_dict()
    sd["bf16"] = torch.arange(6, dtype=torch.float32).to(torch.bfloat16)
    sd["view"] = sd["bf16"][2:]
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    blob = path.read_bytes()

    layout = parse_file(path)

    check_layout(layout, blob)
    assert layout.format == "torch"
    assert layout.metadata["pickle"] is True and layout.metadata["legacy"] is True
    by_name = {t.name: t for t in layout.tensors}
    assert set(by_name) == set(sd)
    for name, tensor in sd.items():
        t = by_name[name]
        raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert blob[t.offset : t.offset + t.length] == raw, name
        assert t.shape == tuple(tensor.shape)


def test_legacy_torch_file_with_unsafe_object(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(_model(), path, _use_new_zipfile_serialization=False)

    with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules"):
        parse_file(path)
    layout = parse_file(path, allow_unsafe_pickle=True)
    assert layout.metadata["unsafe_imports"] and layout.format == "opaque"


def test_legacy_torch_file_with_broken_records(tmp_path, expect_format_error):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(5)}, path, _use_new_zipfile_serialization=False)
    blob = path.read_bytes()

    path.write_bytes(blob[:-3])  # the last record cut short
    expect_format_error(path, parse_file, match="past the end")
    count_at = len(blob) - 5 * 4 - 8
    path.write_bytes(blob[:count_at] + (4).to_bytes(8, "little") + blob[count_at + 8 :])
    expect_format_error(path, parse_file, match="holds 4 elements")


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_raw_pickle_files(tmp_path, protocol):
    import os

    good, evil = tmp_path / "good.pkl", tmp_path / "evil.pkl"
    good.write_bytes(pickle.dumps({"lr": 0.1, "a": np.zeros(2)}, protocol=protocol))
    evil.write_bytes(pickle.dumps([_Calls(os.system, "true")], protocol=protocol))

    assert parse_file(good).metadata == {"pickle": True}
    with pytest.raises(UnsafePickleError, match="system"):
        parse_file(evil)
    assert parse_file(evil, allow_unsafe_pickle=True).format == "opaque"
    assert parse_file(evil, parse=False).metadata == {}


def test_unreadable_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(b"\x01\x02 not a pickle, though named one")

    with pytest.raises(UnsafePickleError, match="cannot be checked"):
        parse_file(path)
    assert parse_file(path, allow_unsafe_pickle=True).format == "opaque"


@pytest.fixture(scope="module")
def valid_blob(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("torch") / "fuzz.pt"
    w = torch.arange(8, dtype=torch.float32)
    torch.save({"w": w, "b": torch.ones(2, dtype=torch.float16), "v": w[2:]}, path)
    return path.read_bytes()


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_file(data, valid_blob, mutate, scratch, check_layout):
    blob = mutate(data, valid_blob)
    path = scratch / "fuzz.pt"
    path.write_bytes(blob)
    try:
        layout = parse_file(path)
    except FormatError as e:
        assert "cannot be parsed" not in str(e), e  # the parser foresaw it; no safety net
        assert "\n" not in str(e)
        return
    check_layout(layout, blob)


@pytest.fixture(scope="module")
def valid_members(valid_blob) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(valid_blob)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


@settings(max_examples=120, deadline=None)
@given(data=st.data(), allow=st.booleans())
def test_fuzz_mutated_pickle(data, allow, valid_members, mutate, scratch, check_layout):
    """Damage data.pkl itself and re-zip it, so the CRC holds and the unpickler sees it."""
    members = dict(valid_members)
    (pkl,) = [n for n in members if n.endswith("/data.pkl")]
    members[pkl] = mutate(data, members[pkl])
    path = scratch / "fuzz_pickle.pt"
    _zip(path, members)
    try:
        layout = parse_file(path, allow_unsafe_pickle=allow)
    except FormatError as e:
        assert "cannot be parsed" not in str(e), e
        assert "\n" not in str(e)
        return
    check_layout(layout, path.read_bytes())


def test_legacy_storage_bytes_are_never_taken_for_pickles(tmp_path):
    # A storage of 128 elements starts its record with the count 0x80 00 … (a PROTO opcode),
    # and this one's bytes are a hostile pickle: torch.load never unpickles record bytes, so
    # the file is legitimate, and tvc walks past the records instead of scanning them.
    import os

    evil = pickle.dumps([_Calls(os.system, "true")], protocol=2)
    sd = {
        "count_0x80": torch.zeros(128, dtype=torch.uint8),
        "looks_evil": torch.frombuffer(bytearray(evil), dtype=torch.uint8),
    }
    path = tmp_path / "legacy.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert evil in path.read_bytes()

    layout = parse_file(path)

    assert layout.format == "torch"
    assert {t.name for t in layout.tensors} == set(sd)
    # bytes appended after the records are another matter: a loop of pickle.load reads them
    path.write_bytes(path.read_bytes() + evil)
    with pytest.raises(UnsafePickleError, match="system"):
        parse_file(path)


def _global(module: str, name: str) -> bytes:
    """A protocol-2 pickle of one global reference (what a TorchScript data.pkl holds)."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)\x81}b."


def test_torchscript_classes_are_not_imports(tmp_path):
    """A ScriptModule's classes (``__torch__.…``) are built by TorchScript from the archive's
    own code/, never imported by Python: such a file commits without --allow-unsafe-pickle."""
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    path = tmp_path / "scripted.pt"
    torch.jit.script(m).save(str(path))
    layout = parse_file(path)
    assert "unsafe_imports" not in layout.metadata


def test_a_torch_class_without_its_torchscript_source_is_refused(tmp_path):
    members = {
        "archive/data.pkl": _global("__torch__.evil", "Thing"),
        "archive/constants.pkl": pickle.dumps((), protocol=2),
        "archive/code/__torch__/other.py": b"",
    }
    path = tmp_path / "no-code.pt"
    _zip(path, members)
    with pytest.raises(UnsafePickleError, match=r"__torch__\.evil\.Thing"):
        parse_file(path)
    members["archive/code/__torch__/evil.py"] = b""  # now the archive defines it
    _zip(path, members)
    parse_file(path)
