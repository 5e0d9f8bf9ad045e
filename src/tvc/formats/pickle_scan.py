"""Finding what a pickle would import and call, without running it.

Unpickling calls whatever *globals* (``module.name`` callables) the pickle names, so a pickle
can run ``os.system`` on load. A *scan* walks the opcodes with a symbolic stack and memo,
resolves every global the pickle would import — ``GLOBAL``, ``INST``, and ``STACK_GLOBAL``
whose module and name strings may come straight from the stack or from the memo, however
``PUT``/``MEMOIZE`` are mixed — and reports those not on the *allow-list*. The allow-list is
what ``torch.save`` and numpy write for tensors, arrays and plain containers, and nothing that
can reach the file system, a shell, ``eval`` or an arbitrary import. An allowed global is
matched as the exact (module, name) pair a writer emits, so a dotted name that walks from an
allowed object to its attributes (``torch._utils._rebuild_tensor.__globals__``) is not allowed,
and ``BUILD`` applied to a global itself (which sets attributes on a module-level function or
class) is reported as unsafe.

An extension code (``EXT1/2/4``), a ``STACK_GLOBAL`` whose strings cannot be resolved, or a
memo index far beyond any real writer's (it makes the C unpickler allocate a table that
large) is reported too: a pickle we cannot read is never called safe. The opcode reader
mirrors ``pickletools.genops`` but never holds a large argument in memory (bytes, strings,
longs and text lines above 64 KiB are skipped, not read into a buffer), so a multi-GB pickle
of arrays is scanned in constant memory.

*Strict* and *lenient* scans differ only for bytes that stop parsing as a pickle: a strict
scan (for files that say they are pickles) refuses what it cannot read to the end; a lenient
scan (for any other file, which tvc sniffs for pickles by content) calls the file a pickle
only if it parsed to ``STOP`` or *called* something unsafe before it broke off — a CSV line
that happens to start with ``c`` imports nothing when loaded, but ``cos\\nsystem\\n(S'ls'\\ntR``
runs ``ls`` however the file goes on.
"""

from __future__ import annotations

import codecs
import io
import os
import pickletools
import struct
import warnings
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from tvc.errors import FormatError
from tvc.formats.dtypes import TORCH_DTYPES, TORCH_STORAGE_DTYPES

#: Globals a pickle may import and still be loaded without --allow-unsafe-pickle. Each one
#: only builds data (tensors, storages, arrays, dtypes, containers) from its arguments.
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    [
        "collections.OrderedDict",
        # torch.save: tensor and parameter rebuilders, storage classes, dtypes, devices
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.UntypedStorage",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.nn.parameter.Parameter",
        # TorchScript archives (ScriptModule.save): functions that return their argument
        *(
            f"torch.jit._pickle.{fn}"
            for fn in (
                "build_intlist",
                "build_tensorlist",
                "build_doublelist",
                "build_boollist",
                "build_tensor_from_id",
                "restore_type_tag",
            )
        ),
        *(f"torch.{name}" for name in TORCH_STORAGE_DTYPES),
        *(f"torch.{name}" for name in TORCH_DTYPES),
        # numpy arrays, scalars and dtypes (numpy 1 spells the module core, numpy 2 _core)
        *(
            f"numpy.{core}.{fn}"
            for core in ("core", "_core")
            for fn in ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
        ),
        "numpy.ndarray",
        "numpy.dtype",
        # bytes under protocol 2, and builtin containers without a literal opcode
        "_codecs.encode",
        "builtins.bytes",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.slice",
    ]
)
#: The allow-list as the (module, name) pairs writers emit: the name part never has a dot.
ALLOWED_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (g.rsplit(".", 1)[0], g.rsplit(".", 1)[1]) for g in ALLOWED_GLOBALS
)

#: Pickle writers number memo entries 0, 1, 2, …; an index far beyond the opcodes seen so far
#: only serves to make the C unpickler allocate a huge memo table.
MEMO_SLACK = 1 << 16
#: Arguments longer than this are skipped, not read: they cannot name a global anyway.
BIG_ARG = 1 << 16
_MARK = object()  # a MARK on the symbolic stack
_BIG = object()  # an argument too long to keep
_PROTO = 0x80
_CODE2OP = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
# Counted arguments: (struct format of the length prefix, how to decode the payload).
_COUNTED: dict[str, tuple[str, str]] = {
    "bytes1": ("<B", "bytes"),
    "bytes4": ("<I", "bytes"),
    "bytes8": ("<Q", "bytes"),
    "bytearray8": ("<Q", "bytes"),
    "string1": ("<B", "latin-1"),
    "string4": ("<i", "latin-1"),
    "unicodestring1": ("<B", "utf-8"),
    "unicodestring4": ("<I", "utf-8"),
    "unicodestring8": ("<Q", "utf-8"),
    "long4": ("<i", "long"),
}
# Opcodes that push a str (the Python 2 STRING family unpickles as str under Python 3).
_STRING_OPS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE"}
    | {"BINUNICODE8"}
)
_INT_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
# Opcodes whose result is certainly no string (a constant, a container, bytes, a float):
# a STACK_GLOBAL given one fails in the loader before it imports anything.
_NOT_STR_OPS = frozenset(
    {"NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "FROZENSET", "LIST", "DICT"}
    | {"EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET", "TUPLE", "TUPLE1", "TUPLE2"}
    | {"TUPLE3", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
)
_NOT_STR = object()  # on the symbolic stack: a value known not to be a string
# Opcodes that call the object below their arguments: (opcode, index of the callable in the
# items they pop, counted from the bottom).
_CALLS = {"REDUCE": 0, "NEWOBJ": 0, "NEWOBJ_EX": 0}
# Opcodes that change the object below their arguments, through its own methods if it is not
# a plain dict, list or set.
_MUTATIONS = frozenset({"SETITEM", "SETITEMS", "APPEND", "APPENDS", "ADDITEMS"})


class _Malformed(Exception):
    pass


@dataclass(frozen=True)
class _Global:
    """A global on the symbolic stack, as the loader would resolve it."""

    name: str
    allowed: bool
    # From the copyreg registry (EXT1/2/4): CPython registers no code, so loading stops at the
    # EXT opcode unless the loading program registered one; using it is not counted as a use.
    extension: bool = False


@dataclass
class PickleScan:
    """What one scan of a stream of back-to-back pickles found."""

    unsafe: list[str] = field(default_factory=list)  # disallowed globals of complete pickles
    pickles: int = 0  # complete pickles read (each ended with STOP)
    end: int = 0  # stream position after the last complete pickle
    values: list[Any] = field(default_factory=list)  # each complete pickle's top, if simple
    used_unsafe: bool = False  # a complete pickle used (called, built…) a disallowed global
    # The pickle that broke off, if any: why, what it imported, and whether it used any of it
    # (called it, built it, set items on it).
    malformed: str | None = None
    partial_unsafe: list[str] = field(default_factory=list)
    called_unsafe: bool = False


def scan_pickle(data: bytes | bytearray | memoryview | BinaryIO) -> list[str]:
    """The globals one pickle imports that are not allowed, as ``module.name``, in order.

    Raises ``FormatError`` if the bytes are not a well-formed pickle.
    """
    f = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    scan = scan_stream(f, max_pickles=1)
    if scan.malformed is not None:
        raise FormatError(f"malformed pickle: {scan.malformed}")
    if not scan.pickles:
        raise FormatError("malformed pickle: no bytes")
    return scan.unsafe


def scan_stream(
    f: BinaryIO,
    *,
    max_pickles: int | None = None,
    first_any_byte: bool = True,
    rewind: bool = True,
) -> PickleScan:
    """Scan the pickles stored back to back from ``f``'s position, as a loader reads them.

    Stops after ``max_pickles``, at the end of the stream, at the first malformed pickle, or
    (unless ``first_any_byte``) before a later pickle that does not start with ``PROTO``.
    With ``rewind`` the stream is left after the last complete pickle (compressed streams
    pass False: going back means decompressing again from the start).
    """
    scan = PickleScan(end=f.tell())
    peek = getattr(f, "peek", None)
    while max_pickles is None or scan.pickles < max_pickles:
        if peek is not None:
            head = peek(1)[:1]
        else:
            head = f.read(1)
            f.seek(scan.end)
        if not head:
            break
        if scan.pickles and not first_any_byte and head[0] != _PROTO:
            break
        found: list[str] = []
        machine = _Machine(found)
        try:
            with warnings.catch_warnings():  # the STRING readers warn of odd escapes
                warnings.simplefilter("ignore", DeprecationWarning)
                for op, arg, pos in _ops(f):
                    machine.pos = pos
                    machine.step(op, arg)
        except Exception as e:  # _Malformed, or a reader's ValueError and friends
            detail = " ".join(str(e).split())[:200]  # one line, however odd the bytes
            scan.malformed = f"{detail} (near byte {machine.pos})"
            scan.partial_unsafe = found
            scan.called_unsafe = machine.called_unsafe
            break
        scan.pickles += 1
        scan.end = f.tell()
        scan.used_unsafe = scan.used_unsafe or machine.called_unsafe
        scan.unsafe += [g for g in found if g not in scan.unsafe]
        top = machine.result
        scan.values.append(top if isinstance(top, int | str) else None)
    if rewind and f.tell() != scan.end:
        f.seek(scan.end)
    return scan


def refusal(path: str, unsafe: list[str]) -> str:
    """The one-line message that refuses a pickle importing ``unsafe`` globals."""
    shown = [g if g.isprintable() and " " not in g else repr(g)[:80] for g in unsafe[:10]]
    more = f" and {len(unsafe) - 10} more" if len(unsafe) > 10 else ""
    return (
        f"{path}: pickle imports {', '.join(shown)}{more}, which loading would execute; "
        "refusing it (--allow-unsafe-pickle overrides)"
    )


# --- the opcode reader ------------------------------------------------------------------------


def _ops(f: BinaryIO) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int]]:
    """``pickletools.genops`` without holding long arguments (see the module docstring)."""
    while True:
        pos = f.tell()
        code = f.read(1)
        if not code:
            raise _Malformed("pickle exhausted before seeing STOP")
        op = _CODE2OP.get(code)
        if op is None:
            raise _Malformed(f"unknown opcode {code!r} at byte {pos}")
        arg = None
        spec = op.arg
        if spec is not None:
            if spec.name in _COUNTED:
                arg = _counted(f, *_COUNTED[spec.name])
            elif spec.n == pickletools.UP_TO_NEWLINE:
                arg = _text_arg(f, spec.name)
            else:
                arg = spec.reader(f)
        yield op, arg, pos
        if code == b".":
            return


def _counted(f: BinaryIO, prefix: str, kind: str) -> Any:
    width = struct.calcsize(prefix)
    raw = f.read(width)
    if len(raw) != width:
        raise _Malformed("a length prefix runs past the end")
    (n,) = struct.unpack(prefix, raw)
    if n < 0:
        raise _Malformed(f"negative length {n}")
    if n > BIG_ARG:
        _skip(f, n)
        return _BIG
    data = f.read(n)
    if len(data) != n:
        raise _Malformed(f"an argument of {n} bytes runs past the end")
    if kind == "bytes":
        return data
    if kind == "long":
        return int.from_bytes(data, "little", signed=True)
    return data.decode(kind, "surrogatepass" if kind == "utf-8" else "strict")


def _skip(f: BinaryIO, n: int) -> None:
    """Move past ``n`` bytes of an argument, checking they are there."""
    size = None
    if isinstance(f, io.BufferedReader | io.FileIO) and f.seekable():
        # only a plain file: a GzipFile's fileno() is its compressed file's
        size = os.fstat(f.fileno()).st_size
    if size is not None:
        pos = f.tell()
        if pos + n > size:
            raise _Malformed(f"an argument of {n} bytes runs past the end")
        f.seek(pos + n)
        return
    while n:
        got = len(f.read(min(n, 1 << 20)))
        if not got:
            raise _Malformed("an argument runs past the end")
        n -= got


def _line(f: BinaryIO) -> bytes | object:
    """One newline-terminated argument; a line over BIG_ARG is skipped to its newline."""
    line = f.readline(BIG_ARG + 1)
    if line.endswith(b"\n"):
        return line
    if len(line) <= BIG_ARG:
        raise _Malformed("no newline at the end of a text argument")
    while True:
        more = f.readline(1 << 20)
        if not more:
            raise _Malformed("no newline at the end of a text argument")
        if more.endswith(b"\n"):
            return _BIG


def _text_arg(f: BinaryIO, kind: str) -> Any:
    """A newline-terminated argument, read never more strictly than the C unpickler reads it.

    ``pickletools`` is stricter in places (``GLOBAL`` names must be ASCII and go through
    escape decoding; ``I0x10`` is refused), and every place where the scanner gives up while
    the loader goes on is a place to hide a payload. So names are UTF-8 without escapes, as
    ``_pickle.c`` decodes them, and numbers that do not parse are unknown values, not errors.
    """
    if kind == "stringnl_noescape_pair":  # GLOBAL, INST: module and name
        lines = [_line(f), _line(f)]
        if any(line is _BIG for line in lines):
            return _BIG
        try:
            module, name = (line[:-1].decode("utf-8") for line in lines)  # type: ignore[index]
        except UnicodeDecodeError:
            raise _Malformed("a global's name is not UTF-8") from None
        return (module, name)
    line = _line(f)
    if line is _BIG:
        return _BIG
    text = line[:-1].decode("latin-1")  # type: ignore[index]
    if kind == "decimalnl_short":  # INT: also the booleans 00 and 01
        if text in ("00", "01"):
            return text == "01"
        return _lax_int(text)
    if kind == "decimalnl_long":  # LONG
        return _lax_int(text[:-1] if text.endswith("L") else text)
    if kind == "floatnl":
        return None
    if kind == "stringnl":  # STRING: quoted, with escapes (as _pickle.c checks)
        if len(text) < 2 or text[0] != text[-1] or text[0] not in "'\"":
            raise _Malformed("the STRING opcode argument must be quoted")
        raw = codecs.escape_decode(text[1:-1].encode("latin-1"))[0]
        return raw.decode("latin-1")
    if kind == "unicodestringnl":  # UNICODE
        return line[:-1].decode("raw-unicode-escape")  # type: ignore[index]
    return text  # PERSID: a persistent id loaders resolve themselves


def _lax_int(text: str) -> int | None:
    for base in (10, 0, 8):
        try:
            return int(text, base)
        except ValueError:
            continue
    return None


# --- the symbolic machine ---------------------------------------------------------------------


class _Machine:
    """The symbolic stack and memo: strings, ints, globals, MARKs, ``_NOT_STR`` (a constant or
    container: no string) or None (anything else)."""

    def __init__(self, found: list[str]):
        self.found = found
        self.seen: set[str] = set(found)
        self.called_unsafe = False
        self.result: Any = None  # what STOP returns
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.n_ops = 0
        self.pos: int | None = 0

    def step(self, op: pickletools.OpcodeInfo, arg: Any) -> None:
        self.n_ops += 1
        name, stack = op.name, self.stack
        if name == "PROTO":
            self.proto = arg
            return
        if name == "STOP":
            self.result = self.pop(1)[0]
            return
        if name in ("GLOBAL", "INST"):
            if arg is _BIG:
                g = self.resolve(None, f"<{name} naming over {BIG_ARG} bytes>")
            else:
                module, attr = arg
                g = self.resolve(module, attr)
            if name == "GLOBAL":
                stack.append(g)
                return
            self.pop_to_mark()
            self.call(g)
            stack.append(None)
            return
        if name == "STACK_GLOBAL":
            module, attr = self.pop(2)
            if isinstance(module, str) and isinstance(attr, str):
                stack.append(self.resolve(module, attr))
            elif any(
                isinstance(v, int | _Global) or v in (_MARK, _NOT_STR) for v in (module, attr)
            ):
                # Known not to be strings: the C unpickler stops here ("STACK_GLOBAL requires
                # str") before anything is imported. Random data reads this way now and then.
                raise _Malformed(f"STACK_GLOBAL of a non-string at byte {self.pos}")
            else:
                stack.append(self.resolve(None, f"<unresolved STACK_GLOBAL at byte {self.pos}>"))
            return
        if name.startswith("EXT"):  # a global from the copyreg registry: could be anything
            g = self.resolve(None, f"<extension code {arg}>")
            stack.append(_Global(g.name, False, extension=True))
            return
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack or stack[-1] is _MARK:
                raise _Malformed(f"memo store of an empty stack at byte {self.pos}")
            index = len(self.memo) if name == "MEMOIZE" else arg
            if index > self.n_ops + MEMO_SLACK:  # the C unpickler sizes its memo table by it
                # Reported, not a reason to stop: the loader would go on (or run out of
                # memory), so the scan goes on too.
                self.report(f"<memo index {index} at byte {self.pos}: a memory bomb>")
            self.memo[index] = stack[-1]
            return
        if name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _Malformed(f"memo index {arg} never stored, at byte {self.pos}")
            stack.append(self.memo[arg])
            return
        if name == "DUP":
            stack.append(self.pop(1)[0])
            stack.append(stack[-1])
            return
        if name == "OBJ":
            items = self.pop_to_mark()
            if not items:
                raise _Malformed(f"OBJ without a class at byte {self.pos}")
            self.call(items[0])
            stack.append(None)
            return
        if name == "BUILD":
            inst, _state = self.pop(2)
            if isinstance(inst, _Global):  # sets attributes of the imported object itself
                self.called_unsafe = self.called_unsafe or not inst.extension
                self.report(f"{inst.name} (modified by BUILD)")
            stack.append(None if isinstance(inst, _Global) else inst)
            return
        # Everything else: pop what the opcode consumes, push what it produces.
        before = op.stack_before
        if pickletools.markobject in before:
            self.pop_to_mark()
            popped = self.pop(before.index(pickletools.markobject))
        else:
            popped = self.pop(len(before))
        if name in _CALLS:
            self.call(popped[_CALLS[name]])
        if name in _MUTATIONS:
            # dict[key] = v, list.append, set.add: on anything but a real dict, list or set
            # these call the object's own methods (os.environ[...] = ..., sys.path.append)
            self.call(popped[0])
            stack.append(popped[0])
            return
        if name == "MARK":
            stack.append(_MARK)
        elif name in _STRING_OPS and isinstance(arg, str):
            stack.append(arg)  # a string STACK_GLOBAL may take as module or name
        elif name in _INT_OPS and isinstance(arg, int):
            stack.append(arg)  # legacy torch files start with a magic number
        elif name in _NOT_STR_OPS:
            stack.append(_NOT_STR)
        else:
            stack.extend([None] * len(op.stack_after))

    def resolve(self, module: str | None, name: str) -> _Global:
        """The global the loader would import, reported if it is not allowed."""
        if module is None:
            self.report(name)
            return _Global(name, False)
        if self.proto < 3:  # as pickle.Unpickler.find_class maps Python 2 names
            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        allowed = (module, name) in ALLOWED_PAIRS
        if not allowed:
            self.report(full)
        return _Global(full, allowed)

    def call(self, target: Any) -> None:
        if isinstance(target, _Global) and not target.allowed and not target.extension:
            self.called_unsafe = True

    def report(self, name: str) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.found.append(name)

    def pop(self, n: int) -> list[Any]:
        if len(self.stack) < n:
            raise _Malformed(f"stack underflow at byte {self.pos}")
        if n == 0:
            return []
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def pop_to_mark(self) -> list[Any]:
        items: list[Any] = []
        while self.stack:
            item = self.stack.pop()
            if item is _MARK:
                items.reverse()
                return items
            items.append(item)
        raise _Malformed(f"no MARK for the opcode at byte {self.pos}")
