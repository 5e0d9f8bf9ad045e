"""Names and references: what users type, parsed and validated in one place.

Reference syntax (DESIGN.md): ``MODEL`` (= ``MODEL@main``), ``MODEL@v3``, ``MODEL@production``
(alias), ``MODEL@release-1`` (tag), ``MODEL@exp-lr`` (branch), ``MODEL@3fa9c2e1`` (id prefix of
at least 8 hex digits), each optionally followed by ``~N`` (the N-th first parent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tvc.errors import UnknownRefError, UsageError

MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?$")
REF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = re.compile(r"^v([0-9]+)$")
ID_PREFIX_RE = re.compile(r"^[0-9a-f]{8,64}$")
DEFAULT_BRANCH = "main"
# Version numbers are stored as 64-bit integers: a larger one names nothing (and must not reach
# the database, which cannot even compare with it).
MAX_VERSION = 2**63 - 1
REF_KINDS = ("branch", "tag", "alias")


def check_model_name(name: str) -> str:
    if not MODEL_RE.match(name) or len(name) > 255 or ".." in name:
        raise UsageError(
            f"invalid model name {name!r}: use lowercase letters, digits, '.', '_', '-' "
            "(optionally namespace/name)"
        )
    return name


def check_ref_name(name: str, kind: str) -> str:
    """Branch, tag and alias names: no '@', '~', '/', and never shaped like ``v12``."""
    if not REF_NAME_RE.match(name) or len(name) > 255:
        raise UsageError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_', '-'")
    if VERSION_RE.match(name):
        raise UsageError(f"invalid {kind} name {name!r}: names like v1 are version numbers")
    return name


@dataclass(frozen=True)
class Ref:
    model: str
    rev: str  # as typed; DEFAULT_BRANCH when omitted
    ancestors: int = 0
    explicit: bool = True  # False when the user typed only MODEL

    def __str__(self) -> str:
        suffix = f"~{self.ancestors}" if self.ancestors else ""
        return f"{self.model}@{self.rev}{suffix}"


def parse_ref(text: str) -> Ref:
    """Parse ``MODEL[@REV][~N]``; the revision itself is resolved against the DB later."""
    if not text or text != text.strip():
        raise UsageError(f"invalid reference {text!r}")
    ancestors = 0
    body = text
    m = re.match(r"^(.*?)((?:~[0-9]*)+)$", text)
    if m:
        body = m.group(1)
        for part in m.group(2).split("~")[1:]:
            ancestors += int(part) if part else 1
    if "@" in body:
        model, rev = body.split("@", 1)
        if not rev:
            raise UsageError(f"invalid reference {text!r}: nothing after '@'")
        if not (REF_NAME_RE.match(rev) or VERSION_RE.match(rev)):
            raise UsageError(f"invalid reference {text!r}: bad revision {rev!r}")
        number = VERSION_RE.match(rev)
        if number and int(number.group(1)) > MAX_VERSION:
            check_model_name(model)
            raise UnknownRefError(f"{model} has no version {rev}")
        explicit = True
    else:
        model, rev, explicit = body, DEFAULT_BRANCH, False
    check_model_name(model)
    return Ref(model, rev, ancestors, explicit)
