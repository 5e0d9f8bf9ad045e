"""The pickle scanner: what it lets through, what it reports, and malformed input."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import subprocess
import warnings

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from tvc.errors import FormatError
from tvc.formats.pickle_files import Findings
from tvc.formats.pickle_scan import ALLOWED_GLOBALS, scan_pickle, scan_stream


class _Calls:
    """Pickles as a call of ``func(*args)``, like a hostile payload would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_data_and_numpy_are_allowed(protocol):
    obj = {
        "ints": [1, 2**70, -3],
        "text": "héllo",
        "bytes": b"\x00\xff",
        "tuple": (1.5, None, True),
        "set": {1, 2},
        "frozen": frozenset([3]),
        "od": collections.OrderedDict(a=1),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scalar": np.float64(2.5),
        "dtype": np.dtype("i2"),
        "complex": 1 + 2j,
        "bytearray": bytearray(b"ab"),
        "slice": slice(1, 2),
    }

    assert scan_pickle(pickle.dumps(obj, protocol=protocol)) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("func", "args", "name"),
    [
        (os.system, ("true",), f"{os.system.__module__}.system"),
        (builtins.eval, ("1",), "builtins.eval"),
        (builtins.exec, ("pass",), "builtins.exec"),
        (builtins.getattr, ("x", "upper"), "builtins.getattr"),
        (subprocess.Popen, (["true"],), "subprocess.Popen"),
        (collections.Counter, ("ab",), "collections.Counter"),
    ],
)
def test_dangerous_imports_are_reported(protocol, func, args, name):
    data = pickle.dumps({"weights": [1, 2], "x": _Calls(func, *args)}, protocol=protocol)

    found = scan_pickle(data)

    assert name in found
    assert all(g not in ALLOWED_GLOBALS for g in found)


def test_each_name_reported_once_in_order():
    data = pickle.dumps([_Calls(eval, "1"), _Calls(os.system, "x"), _Calls(eval, "2")], protocol=2)

    assert scan_pickle(data) == ["builtins.eval", f"{os.system.__module__}.system"]


def test_python2_names_are_mapped_under_protocol_2():
    allowed = b"\x80\x02c__builtin__\nset\n)R."
    evil = b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R."

    assert scan_pickle(allowed) == []
    assert scan_pickle(evil) == ["builtins.eval"]


def test_protocol_0_global_and_inst():
    assert scan_pickle(b"cos\nsystem\n(S'ls'\ntR.") == ["os.system"]
    assert scan_pickle(b"(S'ls'\nios\nsystem\n.") == ["os.system"]


def test_stack_global_strings_from_the_memo():
    # 'os' and 'system' are memoized and dropped, then fetched back for STACK_GLOBAL:
    # a scanner that only looks at the two preceding string opcodes misses this.
    data = (
        b"\x80\x04"
        b"\x8c\x02os\x94"  # SHORT_BINUNICODE 'os', MEMOIZE -> 0
        b"0"  # POP
        b"\x8c\x06system\x94"  # SHORT_BINUNICODE 'system', MEMOIZE -> 1
        b"0"
        b"\x8c\x04junk"  # a decoy string right before
        b"0"
        b"h\x00h\x01"  # BINGET 0, BINGET 1
        b"\x93"  # STACK_GLOBAL
        b"\x8c\x02ls\x85R."  # ('ls',) REDUCE STOP
    )

    assert scan_pickle(data) == ["os.system"]


def test_stack_global_via_binput_and_long_binget():
    data = (
        b"\x80\x04"
        b"\x8c\x08builtins" + b"q\x05"  # BINPUT 5
        b"0"
        b"\x8c\x04eval" + b"r\x09\x00\x00\x00"  # LONG_BINPUT 9
        b"0"
        b"j\x05\x00\x00\x00" + b"h\x09"  # LONG_BINGET 5, BINGET 9
        b"\x93\x8c\x011\x85R."
    )

    assert scan_pickle(data) == ["builtins.eval"]


def test_unresolvable_stack_global_is_reported():
    # The module "name" is what a call returned: nothing can vouch for this import.
    data = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R\x8c\x06system\x93)R."

    (found,) = scan_pickle(data)

    assert found.startswith("<unresolved STACK_GLOBAL")


@pytest.mark.parametrize(
    "module", [b"]", b"N", b"\x88", b"G?\xf0\x00\x00\x00\x00\x00\x00", b"C\x00"]
)
def test_stack_global_of_a_known_non_string_stops_where_the_loader_does(module):
    """A list, None, True, a float or bytes as the module: the C unpickler refuses the
    STACK_GLOBAL ("requires str") before importing anything, and so does the scan. Random data
    reads this way now and then; in a file not named as a pickle it is then no pickle at all."""
    data = b"\x80\x04" + module + b"\x8c\x06system\x93)R."
    with pytest.raises(pickle.UnpicklingError, match="STACK_GLOBAL requires str"):
        pickle.loads(data)
    with pytest.raises(FormatError, match="STACK_GLOBAL of a non-string"):
        scan_pickle(data)
    lenient, strict = Findings(), Findings()
    assert not lenient.add("", scan_stream(io.BytesIO(data)), strict=False)
    strict.add("", scan_stream(io.BytesIO(data)), strict=True)
    assert strict.problems and not lenient.problems and not lenient.unsafe


def test_random_bytes_that_read_as_a_memory_bomb_are_no_pickle_unless_named_one():
    """`M <int> r <index> .` (9 bytes; about one random 1 KB file in 830,000 reads so): the
    loader would size its memo table by the index, but nothing is imported or called. A file
    named as a pickle is refused for it; any other file is just bytes."""
    data = b"M\xb6\x9dr\x08P\xcf\xe4." + bytes(range(256)) * 4
    scan = scan_stream(io.BytesIO(data))
    assert scan.pickles == 1 and scan.unsafe[0].endswith("a memory bomb>")
    assert not Findings().add("", scan, strict=False)
    named = Findings()
    named.add("", scan_stream(io.BytesIO(data)), strict=True)
    assert named.unsafe


def test_memo_bombs_are_reported_and_the_scan_goes_on():
    # LONG_BINPUT far beyond any real memo (the C unpickler would allocate 16 GB), then a call
    data = b"\x80\x02]r\xff\xff\xff\x7f0cos\nsystem\n(S'true'\ntR."

    found = scan_pickle(data)

    assert found[0].endswith("a memory bomb>") and found[1] == "os.system"


def test_extension_codes_are_reported():
    assert scan_pickle(b"\x80\x02\x82\x01)R.") == ["<extension code 1>"]


def test_torch_state_dict_pickle_is_allowed():
    torch = pytest.importorskip("torch")
    import zipfile

    sd = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).state_dict()
    extra = {
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "f8": torch.zeros(2, dtype=torch.float8_e4m3fn),
        "u16": torch.zeros(2, dtype=torch.uint16),
        "param": torch.nn.Parameter(torch.ones(2)),
        "device": torch.device("cpu"),
        "dtype": torch.float16,
        "size": torch.Size([2, 3]),
    }
    buf = io.BytesIO()
    torch.save({"model": sd, "extra": extra, "epoch": 3}, buf)
    with zipfile.ZipFile(buf) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        data = zf.read(name)

    assert scan_pickle(data) == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x80\x04\x95",  # FRAME without its length
        b"\x80\x02]q\x01",  # no STOP
        b"\x80\x02h\x07.",  # BINGET of an index never stored
        b"\x80\x02t.",  # TUPLE without MARK
        b"\x80\x02R.",  # REDUCE on an empty stack
        b"\x80\x02\xff.",  # unknown opcode
        b"\x80\x05\x8e\xff\xff\xff\xff\xff\xff\xff\x7f.",  # BINBYTES8 longer than the data
    ],
)
def test_malformed_pickles_are_format_errors(data):
    with pytest.raises(FormatError, match="malformed pickle") as info:
        scan_pickle(data)
    assert "\n" not in str(info.value)


def test_scan_stream_follows_consecutive_pickles():
    # Legacy torch files are several pickles back to back, then raw storage bytes.
    first = pickle.dumps(119547037146038801333356, protocol=2)
    second = pickle.dumps({"a": 1}, protocol=0)  # any protocol, not only PROTO-marked ones
    third = pickle.dumps(_Calls(eval, "1"), protocol=1)
    f = io.BytesIO(first + second + third + b"\x10\x00raw storage bytes")

    scan = scan_stream(f)

    assert (scan.pickles, scan.unsafe) == (3, ["builtins.eval"])
    assert scan.values[0] == 119547037146038801333356
    assert scan.end == len(first + second + third) == f.tell()
    assert scan.malformed is not None and not scan.called_unsafe  # the raw bytes


def test_scan_stream_reports_a_call_before_the_break():
    data = pickle.dumps(_Calls(eval, "1"), protocol=2)[:-1]  # no STOP: loading still runs eval

    scan = scan_stream(io.BytesIO(data))

    assert scan.pickles == 0
    assert scan.partial_unsafe == ["builtins.eval"] and scan.called_unsafe


def test_scan_stream_an_import_without_a_call_is_not_a_call():
    # A text line starting with "c" reads as GLOBAL, but nothing is called before it breaks.
    scan = scan_stream(io.BytesIO(b"col_a,col_b\n1,2\n3,4\n"))

    assert scan.pickles == 0 and not scan.called_unsafe and scan.malformed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data):
    try:
        found = scan_pickle(b"\x80\x04" + data)
    except FormatError:
        return
    assert isinstance(found, list)


_objects = st.recursive(
    st.none() | st.integers() | st.text(max_size=5) | st.binary(max_size=5) | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(obj=_objects, protocol=st.sampled_from(list(PROTOCOLS)), cut=st.integers(0, 200))
def test_fuzz_real_pickles_and_their_prefixes(obj, protocol, cut):
    data = pickle.dumps(obj, protocol=protocol)

    assert scan_pickle(data) == []
    try:
        scan_pickle(data[:cut])
    except FormatError:
        pass


# --- differential: tvc's verdict against what CPython's C unpickler really imports and calls ---


class _TrapMeta(type):
    """Calling, indexing or extending a trap class records it (a global used, not just named)."""

    def __call__(cls, *args, **kwargs):
        _Trap.called.append(f"call {cls.__name__}")
        return super().__call__(*args, **kwargs)

    def __setitem__(cls, key, value):
        _Trap.called.append(f"setitem {cls.__name__}")

    def append(cls, item):
        _Trap.called.append(f"append {cls.__name__}")

    def extend(cls, items):
        _Trap.called.append(f"extend {cls.__name__}")

    def add(cls, item):
        _Trap.called.append(f"add {cls.__name__}")


class _Trap(metaclass=_TrapMeta):
    """Stands in for a disallowed global: records being called, built or given state."""

    called: list[str] = []  # noqa: RUF012 - one record shared by every trap class

    def __new__(cls, *args, **kwargs):
        _Trap.called.append(f"new {cls.__name__}")
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(*args):  # BUILD on the class itself passes the state as "self"
        _Trap.called.append("setstate")


class _Harmless:
    """Stands in for an allowed global: accepts anything, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return self


class _TrapUnpickler(pickle.Unpickler):
    imported: list[str]

    def find_class(self, module, name):
        from tvc.formats.pickle_scan import ALLOWED_PAIRS

        if (module, name) in ALLOWED_PAIRS:
            return _Harmless
        self.imported.append(f"{module}.{name}")
        return type(f"{module}.{name}", (_Trap,), {})

    def persistent_load(self, pid):
        return None


def _really_load(data: bytes) -> list[str]:
    """Load every pickle of ``data`` as a loop of ``pickle.load`` would; what it imported."""
    f = io.BytesIO(data)
    imported: list[str] = []
    while f.tell() < len(data):
        u = _TrapUnpickler(f)
        u.imported = imported
        try:
            with warnings.catch_warnings():  # odd escapes in STRING arguments
                warnings.simplefilter("ignore")
                u.load()
        except Exception:
            break
    return imported


def _mutants(r, seed: bytes) -> bytes:
    b = bytearray(seed)
    for _ in range(r.choice([1, 1, 2, 3])):
        if not b:
            break
        at = r.randrange(len(b))
        op = r.randrange(6)
        if op == 0:
            b[at] ^= 1 << r.randrange(8)
        elif op == 1:
            del b[at : at + r.randrange(1, 4)]
        elif op == 2:  # an opcode from the table, with a plausible argument after it
            b[at:at] = r.choice(
                [b"R", b"b", b"0", b"2", b"(", b"t", b")", b"\x85", b"\x93", b"\x94", b"h\x00",
                 b"q\x01", b"N", b"}", b"]", b"o", b"\x81", b"\x92", b".", b"\x95" + bytes(8),
                 b"s", b"u", b"a", b"e", b"\x90", b"\x8c\x01a", b"I0x1\n", b"P1\n",
                 b"\xd2\xbb", b"\\x"]
            )  # fmt: skip
        elif op == 3:
            b[at:at] = b[r.randrange(len(b)) :][: r.randrange(1, 12)]  # a piece elsewhere
        elif op == 4:
            del b[at:]
        else:
            b[at] = r.randrange(256)
    return bytes(b)


def test_differential_against_the_c_unpickler():
    """Mutated payloads: whenever tvc calls a stream safe, CPython's unpickler agrees.

    Strict (a file that says it is a pickle): no disallowed global is even imported. Lenient
    (any other file): none is called, built or given state — what breaks off after importing
    one is no pickle a loader would run.
    """
    import random

    r = random.Random(12)
    seeds = [pickle.dumps(_Calls(os.system, "true"), protocol=p) for p in PROTOCOLS] + [
        b"cos\nsystem\n(S'true'\ntR.",
        b"(S'true'\nios\nsystem\n.",
        b"(cos\nsystem\nS'true'\no.",
        pickle.dumps({"a": [1, 2], "b": _Calls(eval, "1")}, protocol=4),
        pickle.dumps(collections.OrderedDict(a=np.arange(3)), protocol=2),
        b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93\x8c\x04true\x85R.",
        b"cos\nenviron\nS'LD_PRELOAD'\nS'/tmp/x.so'\ns.",  # no call: a setitem
        b"\x80\x02csys\npath\nX\x04\x00\x00\x00/tmpa.",  # no call: an append
    ]
    seeds += [pickle.dumps({"a": [1, 2.5, "os"], "b": b"x", 3: (None,)}, p) for p in PROTOCOLS]
    checked = {"strict": 0, "lenient": 0}
    for _ in range(10_000):
        data = _mutants(r, r.choice(seeds))
        scan = scan_stream(io.BytesIO(data))
        if any("memory bomb" in g for g in scan.unsafe + scan.partial_unsafe):
            continue  # never hand the C unpickler a memo table bomb
        _Trap.called = []
        imported = _really_load(data)
        complete = scan.malformed is None
        if complete and not scan.unsafe:
            assert imported == [], data
            checked["strict"] += 1
        if not scan.unsafe and not scan.called_unsafe:
            assert _Trap.called == [], (data, _Trap.called)
            checked["lenient"] += 1
    assert min(checked.values()) > 300, checked


@pytest.mark.parametrize(
    "data",
    [
        # names pickletools cannot read (non-ASCII; escape decoding) but _pickle.c can
        b"cos\nsy\xd2\xbbem\n(S'true'\ntR.",
        b"cos\\x\nsystem\n(S'true'\ntR.",
        # numbers Python's int() refuses and strtol(base 0) takes, before the payload
        b"I0x10\n0cos\nsystem\n(S'true'\ntR.",
        b"I010\n0cos\nsystem\n(S'true'\ntR.",
        # a persistent id pickletools escape-decodes
        b"P\\x\n0cos\nsystem\n(S'true'\ntR.",
        # no call at all: os.environ[...] = ... and sys.path.append(...)
        b"cos\nenviron\nS'LD_PRELOAD'\nS'/tmp/x.so'\ns.",
        b"\x80\x02csys\npath\nX\x04\x00\x00\x00/tmpa.",
        b"\x80\x02csys\npath\n(X\x04\x00\x00\x00/tmpe.",
    ],
)
def test_differentials_once_found_are_flagged(data):
    scan = scan_stream(io.BytesIO(data))

    assert scan.unsafe or scan.called_unsafe, scan
    _Trap.called = []
    _really_load(data)
    assert _Trap.called  # the C unpickler does use the global: the scan was right to refuse
