"""Finding what a pickle would import, without running it.

Unpickling calls whatever *globals* (``module.name`` callables) the pickle names, so a pickle
can run ``os.system`` on load. A *scan* walks the opcodes with ``pickletools.genops`` and a
symbolic stack, resolves every global the pickle would import — ``GLOBAL``, ``INST``, and
``STACK_GLOBAL`` whose module and name strings may come straight from the stack or from the
memo — and reports those not on the *allow-list*. The allow-list is what ``torch.save`` and
numpy write for tensors, arrays and plain containers, and nothing that can reach the file
system, a shell, ``eval`` or an arbitrary import.

An extension code (``EXT1/2/4``) or a ``STACK_GLOBAL`` whose strings cannot be resolved is
reported too: a pickle we cannot read to the end is never called safe.
"""

from __future__ import annotations

import io
import pickletools
import warnings
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
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

# Opcodes that push a str (the Python 2 STRING family unpickles as str under Python 3).
_STRING_OPS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE"}
    | {"BINUNICODE8"}
)
#: Pickle writers number memo entries 0, 1, 2, …; an index far beyond the opcodes seen so far
#: only serves to make the C unpickler allocate a huge memo table.
MEMO_SLACK = 1 << 16
_MARK = object()  # a MARK on the symbolic stack
_PROTO = 0x80


class _Malformed(Exception):
    pass


def scan_pickle(data: bytes | bytearray | memoryview | BinaryIO) -> list[str]:
    """The globals one pickle imports that are not allowed, as ``module.name``, in order.

    Raises ``FormatError`` if the bytes are not a well-formed pickle.
    """
    f = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    found: list[str] = []
    try:
        _scan_one(f, found)
    except _Malformed as e:
        raise FormatError(f"malformed pickle: {e}") from None
    return found


def scan_pickle_file(f: BinaryIO, *, always: bool = False) -> tuple[list[str], str | None]:
    """Scan the pickles stored back to back at the start of ``f``, as legacy files hold them.

    Scanning goes on while the next byte is a protocol-2+ ``PROTO`` opcode (``always`` scans
    the first pickle whatever its first byte, for files that say they are pickles). Returns
    the disallowed globals seen, and a description of the first malformation, if any, so a
    caller can refuse a file that could not be read to the end.
    """
    found: list[str] = []
    first = True
    while True:
        start = f.tell()
        head = f.read(1)
        f.seek(start)
        if not head or not (head[0] == _PROTO or (first and always)):
            return found, None
        first = False
        try:
            _scan_one(f, found)
        except _Malformed as e:
            return found, f"malformed pickle: {e}"


def refusal(path: str, unsafe: list[str]) -> str:
    """The one-line message that refuses a pickle importing ``unsafe`` globals."""
    shown = [g if g.isprintable() and " " not in g else repr(g)[:80] for g in unsafe[:10]]
    more = f" and {len(unsafe) - 10} more" if len(unsafe) > 10 else ""
    return (
        f"{path}: pickle imports {', '.join(shown)}{more}, which loading would execute; "
        "refusing it (--allow-unsafe-pickle overrides)"
    )


def _scan_one(f: BinaryIO, found: list[str]) -> None:
    machine = _Machine(found)
    try:
        with warnings.catch_warnings():  # genops warns of odd escapes in STRING args
            warnings.simplefilter("ignore", DeprecationWarning)
            for op, arg, pos in pickletools.genops(f):
                machine.pos = pos
                machine.step(op, arg)
    except _Malformed:
        raise
    except Exception as e:  # genops raises ValueError and friends on bad bytes
        detail = " ".join(str(e).split())[:200]  # one line, however odd the bytes
        raise _Malformed(f"{detail} (near byte {machine.pos})") from None


class _Machine:
    """The symbolic stack and memo: values are strings, MARKs, or None (anything else)."""

    def __init__(self, found: list[str]):
        self.found = found
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
        elif name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            self.report(module, attr)
        elif name == "STACK_GLOBAL":
            module, attr = self.pop(2)
            if isinstance(module, str) and isinstance(attr, str):
                self.report(module, attr)
            else:
                self.report(None, f"<unresolved STACK_GLOBAL at byte {self.pos}>")
            stack.append(None)
            return
        elif name.startswith("EXT"):
            self.report(None, f"<extension code {arg}>")
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack or stack[-1] is _MARK:
                raise _Malformed(f"memo store of an empty stack at byte {self.pos}")
            index = len(self.memo) if name == "MEMOIZE" else arg
            if index > self.n_ops + MEMO_SLACK:  # the C unpickler sizes its memo table by it
                raise _Malformed(f"memo index {index} out of range at byte {self.pos}")
            self.memo[index] = stack[-1]
            return
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _Malformed(f"memo index {arg} never stored, at byte {self.pos}")
            stack.append(self.memo[arg])
            return
        elif name == "DUP":
            stack.append(self.pop(1)[0])
            stack.append(stack[-1])
            return
        # Everything else: pop what the opcode consumes, push what it produces.
        before = op.stack_before
        if pickletools.markobject in before:
            self.pop_to_mark()
            self.pop(before.index(pickletools.markobject))
        else:
            self.pop(len(before))
        if name == "MARK":
            stack.append(_MARK)
        elif isinstance(arg, str) and name in _STRING_OPS:
            stack.append(arg)  # a string STACK_GLOBAL may take as module or name
        else:
            stack.extend([None] * len(op.stack_after))

    def report(self, module: str | None, name: str) -> None:
        if module is not None:
            if self.proto < 3:  # as pickle.Unpickler.find_class maps Python 2 names
                if (module, name) in NAME_MAPPING:
                    module, name = NAME_MAPPING[(module, name)]
                elif module in IMPORT_MAPPING:
                    module = IMPORT_MAPPING[module]
            name = f"{module}.{name}"
        if name not in ALLOWED_GLOBALS and name not in self.found:
            self.found.append(name)

    def pop(self, n: int) -> list[Any]:
        if len(self.stack) < n:
            raise _Malformed(f"stack underflow at byte {self.pos}")
        if n == 0:
            return []
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def pop_to_mark(self) -> None:
        while self.stack:
            if self.stack.pop() is _MARK:
                return
        raise _Malformed(f"no MARK for the opcode at byte {self.pos}")
