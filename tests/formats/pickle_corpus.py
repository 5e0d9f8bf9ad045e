"""A corpus of hostile and legitimate pickle-bearing files, built at test time.

Every hostile file would, if loaded the way its kind is loaded (``pickle.load``,
``torch.load(weights_only=False)``, ``numpy.load(allow_pickle=True)``, ``joblib.load``), run
``touch <marker>`` (or call a function that could). Payloads cover the protocols 0-5, the
usual callables (``os.system``, ``subprocess``, ``builtins.eval/exec/getattr``,
``importlib``, ``marshal``, ``operator``, nested ``pickle.loads``, ``pty``), ``__reduce__``
chains, ``STACK_GLOBAL`` with memoized names and memo confusion, ``INST``/``OBJ``, ``BUILD`` on
a global, extension codes, and published scanner bypasses; containers cover raw files under
any extension, legacy ``torch.save`` streams (the payload after safe pickles), torch zips,
``.npy``/``.npz`` object arrays, joblib (plain and compressed) and tar.

Nothing here runs a payload: the tests scan files and check the marker never appears.
``bench/pickle_scanners.py`` builds the same corpus to compare scanners.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C


class _Call:
    """Pickles as ``func(*args)``: the shape of every ``__reduce__`` payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # pickle wants the callable of a chain to be callable
        raise RuntimeError("a corpus payload is never called")


def _u(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def hostile_pickles(marker: str) -> dict[str, bytes]:
    """Raw hostile pickles, by name."""
    import builtins
    import subprocess

    cmd = f"touch {marker}"
    out: dict[str, bytes] = {}
    for proto in range(6):
        out[f"os.system p{proto}"] = pickle.dumps(_Call(os.system, cmd), protocol=proto)
    out["subprocess.Popen p4"] = pickle.dumps(_Call(subprocess.Popen, ["touch", marker]), 4)
    out["subprocess.run p2"] = pickle.dumps(_Call(subprocess.run, ["touch", marker]), 2)
    out["builtins.eval p0"] = pickle.dumps(_Call(eval, f"__import__('os').system({cmd!r})"), 0)
    out["builtins.exec p5"] = pickle.dumps(_Call(exec, f"import os; os.system({cmd!r})"), 5)
    # getattr(__import__('os'), 'system')(cmd): a __reduce__ chain, three calls deep
    chain = _Call(_Call(builtins.getattr, _Call(builtins.__import__, "os"), "system"), cmd)
    out["getattr chain p3"] = pickle.dumps(chain, 3)
    # payload hidden among plain data, after a benign dict
    out["nested in data p4"] = pickle.dumps(
        {"weights": [1.0, 2.0], "cfg": {"x": _Call(os.system, cmd)}}, 4
    )
    # protocol 0 by hand: INST, OBJ, GLOBAL+REDUCE
    out["INST p0"] = f"(S'{cmd}'\nios\nsystem\n.".encode()
    out["OBJ p1"] = f"(cos\nsystem\nS'{cmd}'\no.".encode()
    out["GLOBAL REDUCE p0"] = f"cos\nsystem\n(S'{cmd}'\ntR.".encode()
    out["pty.spawn INST"] = f"(cpty\nspawn\nS'{cmd}'\no.".encode()
    # STACK_GLOBAL with names from the memo, decoy string right before
    out["STACK_GLOBAL memo"] = (
        b"\x80\x04" + _u("os") + b"\x94" + b"0" + _u("system") + b"\x94" + b"0"
        + _u("torch._utils") + b"0" + b"h\x00h\x01\x93" + _u(cmd) + b"\x85R."
    )  # fmt: skip
    # memo confusion: BINPUT and MEMOIZE mixed so a naive memo model mislabels the strings
    out["memo confusion"] = (
        b"\x80\x04" + _u("os") + b"q\x00" + _u("system") + b"q\x01"
        + _u("torch._utils") + b"\x94" + _u("_rebuild_tensor_v2") + b"\x94"
        + b"0000" + b"h\x00h\x01\x93" + _u(cmd) + b"\x85R."
    )  # fmt: skip
    # BUILD on an imported function: numpy.prod.a = "os"; then GLOBAL 'numpy' 'prod.a' (p4)
    out["BUILD setattr on global"] = (
        b"\x80\x04cnumpy\nprod\n" + b"N}" + _u("a") + _u("os") + b"s\x86b"
        + b"N}" + _u("b") + _u("system") + b"s\x86b0"
        + b"cnumpy\nprod.a\n" + b"cnumpy\nprod.b\n" + b"\x93" + _u(cmd) + b"\x85R."
    )  # fmt: skip
    # BUILD on an allowed global: rewrites torch._utils._rebuild_tensor's defaults
    out["BUILD on allowed global"] = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor\nN}U\x0c__defaults__)s\x86b."
    )
    # a dotted name that walks from an allowed object to its attributes (protocol 4)
    out["dotted attribute of allowed"] = (
        b"\x80\x04" + _u("torch._utils") + _u("_rebuild_tensor.__globals__") + b"\x93."
    )
    out["importlib chain"] = pickle.dumps(
        _Call(_Call(builtins.getattr, _Call(__import__("importlib").import_module, "os"),
                    "system"), cmd), 4,
    )  # fmt: skip
    code = compile(f"__import__('os').system({cmd!r})", "<x>", "exec")
    out["marshal.loads"] = pickle.dumps(_Call(__import__("marshal").loads,
                                              __import__("marshal").dumps(code)), 4)  # fmt: skip
    out["nested pickle.loads"] = pickle.dumps(
        _Call(pickle.loads, pickle.dumps(_Call(os.system, cmd), 2)), 4
    )
    out["operator.methodcaller"] = pickle.dumps(
        _Call(
            _Call(__import__("operator").methodcaller, "system", cmd),
            _Call(__import__("importlib").import_module, "os"),
        ),
        4,
    )
    out["extension code"] = b"\x80\x02\x82\x01" + _u(cmd) + b"\x85R."
    # the call runs, then the pickle breaks off (no STOP): loading still ran it
    out["no STOP after call"] = pickle.dumps(_Call(os.system, cmd), 2)[:-1] + b"\xff\xff"
    # a huge argument before the payload (scanners that read it whole spend memory on it)
    out["big BINBYTES8 first"] = (
        b"\x80\x05\x8e" + struct.pack("<Q", 1 << 17) + bytes(1 << 17) + b"0"
        + pickle.dumps(_Call(os.system, cmd), 5)[2:]
    )  # fmt: skip
    out["long UNICODE line first p0"] = (
        b"V" + b"x" * (1 << 17) + b"\n0" + f"cos\nsystem\n(S'{cmd}'\ntR.".encode()
    )
    # a benign pickle first, the payload second (a loop of pickle.load reads both)
    out["second pickle"] = pickle.dumps({"a": 1}, 2) + pickle.dumps(_Call(os.system, cmd), 0)
    return out


def _npy_object(payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|O", "fortran_order": False, "shape": (1,)}
    )
    return buf.getvalue() + payload


def _legacy_torch(obj_pickle: bytes, keys_pickle: bytes | None = None) -> bytes:
    return (
        pickle.dumps(MAGIC, 2)
        + pickle.dumps(1001, 2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, 2)
        + obj_pickle
        + (keys_pickle if keys_pickle is not None else pickle.dumps([], 2))
    )


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _torch_zip(tmp: Path, data_pkl: bytes | None = None, extra: dict | None = None) -> bytes:
    import torch

    path = tmp / "_base.pt"
    torch.save({"w": torch.ones(4)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    if data_pkl is not None:
        (name,) = [n for n in members if n.endswith("/data.pkl")]
        members[name] = data_pkl
    members.update(extra or {})
    return _zip(members)


def hostile_files(tmp: Path, marker: str) -> dict[str, tuple[str, bytes]]:
    """Hostile files: name -> (file name, bytes)."""
    import joblib

    raw = hostile_pickles(marker)
    out: dict[str, tuple[str, bytes]] = {}
    for name, data in raw.items():
        out[f"{name} [.pkl]"] = ("model.pkl", data)
    base = raw["os.system p0"]
    for ext in (".bin", ".pt", ".ckpt", ".txt", ".npy", ".data", ""):
        out[f"os.system p0 [{ext or 'no ext'}]"] = (f"weights{ext}", base)
    out["os.system p2 [.bin]"] = ("pytorch_model.bin", raw["os.system p2"])
    cmd = raw["os.system p0"]
    # legacy torch: the payload is the object pickle, or the keys pickle after safe ones
    out["legacy torch, object p2"] = ("old.pt", _legacy_torch(raw["os.system p2"]))
    out["legacy torch, object p0"] = ("old.pt", _legacy_torch(cmd))
    out["legacy torch, keys pickle p0"] = (
        "old.pt",
        _legacy_torch(pickle.dumps({}, 2), raw["GLOBAL REDUCE p0"]),
    )
    out["legacy torch, magic by reduce"] = ("old.pt", raw["builtins.eval p0"] + b"\x00" * 8)
    # torch zip: data.pkl, another pickle member, a member outside the prefix
    out["torch zip data.pkl"] = ("z.pt", _torch_zip(tmp, raw["os.system p2"]))
    out["torch zip extra .pkl"] = ("z.pt", _torch_zip(tmp, extra={"archive/x.pkl": cmd}))
    out["torch zip outside prefix"] = ("z.pt", _torch_zip(tmp, extra={"other/y.pkl": cmd}))
    # numpy
    out["npy object array"] = ("a.npy", _npy_object(raw["os.system p2"]))
    out["npy object array [.bin]"] = ("a.bin", _npy_object(raw["os.system p2"]))
    out["npz object array"] = ("a.npz", _zip({"a.npy": _npy_object(raw["os.system p2"])}))
    out["npz deflated"] = (
        "a.npz",
        _zip({"a.npy": _npy_object(raw["os.system p3"])}, zipfile.ZIP_DEFLATED),
    )
    out["zip any member"] = ("bundle.zip", _zip({"readme.txt": b"hi", "blob": cmd}))
    # joblib, plain and compressed
    payload = {"model": _Call(os.system, f"touch {marker}")}
    for compress in (0, "zlib", "gzip", "bz2", "xz", "lzma"):
        buf = tmp / f"_j_{compress}.joblib"
        joblib.dump(payload, buf, compress=compress if compress else 0)
        out[f"joblib {compress or 'plain'}"] = ("model.joblib", buf.read_bytes())
    out["gzip [.bin]"] = ("x.bin", gzip.compress(cmd))
    out["zlib [.dat]"] = ("x.dat", zlib.compress(cmd))
    out["bz2"] = ("x.pkl.bz2", bz2.compress(cmd))
    out["xz"] = ("x.xz", lzma.compress(cmd))
    # tar
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("pickle")
        info.size = len(cmd)
        tf.addfile(info, io.BytesIO(cmd))
    out["tar member"] = ("old.tar", buf.getvalue())
    # polyglot: a pickle with a zip appended (zipfile finds the zip; pickle.load the pickle)
    out["pickle+zip polyglot"] = ("p.zip", raw["os.system p2"] + _zip({"a.txt": b"x"}))
    return out


def benign_files(tmp: Path) -> dict[str, tuple[str, bytes]]:
    """Legitimate files tvc must accept: name -> (file name, bytes)."""
    import torch

    sd = {
        "w": torch.randn(3, 4),
        "b": torch.arange(5, dtype=torch.int64),
        "h": torch.ones(2, dtype=torch.bfloat16),
        "p": torch.nn.Parameter(torch.zeros(2)),
    }
    out: dict[str, tuple[str, bytes]] = {}
    p = tmp / "_b.pt"
    torch.save(sd, p)
    out["torch zip"] = ("model.pt", p.read_bytes())
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    out["torch legacy"] = ("model.pt", p.read_bytes())
    out["torch legacy [.bin]"] = ("pytorch_model.bin", p.read_bytes())
    torch.save({"step": 3, "model": sd}, p, _use_new_zipfile_serialization=False, pickle_protocol=4)
    out["torch legacy p4"] = ("ckpt.ckpt", p.read_bytes())
    data = {"lr": 0.1, "names": ["a", "b"], "arr": np.arange(6.0).reshape(2, 3)}
    for proto in range(6):
        out[f"plain pickle p{proto}"] = ("state.pkl", pickle.dumps(data, protocol=proto))
    buf = io.BytesIO()
    np.save(buf, np.arange(10, dtype=np.float32))
    out["npy"] = ("a.npy", buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.array(["a", 1, None], dtype=object), allow_pickle=True)
    out["npy object array of plain values"] = ("o.npy", buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.ones(3), b=np.zeros((2, 2)))
    out["npz"] = ("a.npz", buf.getvalue())
    out["csv starting with c"] = ("classes.csv", b"cat\ndog\n(S'x'\nbird,1\n")
    out["json"] = ("config.json", b'{"a": [1, 2]}')
    out["text"] = ("README.md", b"# model\n\nIt works.\n")
    rng = np.random.default_rng(0)
    out["random bytes [.bin]"] = ("raw.bin", rng.bytes(4096))
    out["float32 starting 0x80 0x02"] = ("raw.f32", b"\x80\x02" + rng.bytes(4094))
    out["gzip of text"] = ("notes.txt.gz", gzip.compress(b"hello\n" * 100))
    return out
