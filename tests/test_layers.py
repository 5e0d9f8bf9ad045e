"""Layers only import downward: store → formats → repo → registry → analysis → api/cli.

Checked on the source text (ast), so an upward import fails here before it tangles anything.
``errors`` is shared by all. Imports inside functions count too: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tvc"
ORDER = [
    "errors",
    "store",
    "formats",
    "repo",
    "registry",
    "analysis",
    "remote",
    "api",
    "ui",  # the web UI; tvc server installs it (ui knows the server only by duck typing)
    "server",
    "serving",  # beside remote/server: nothing but cli imports it
    "cli",
]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tvc" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ORDER else None


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


FILES = sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_go_down(path):
    rel = path.relative_to(SRC)
    own = rel.parts[0].removesuffix(".py")
    if own not in ORDER:
        return  # tvc/__init__.py, __main__.py: the package's front door
    rank = ORDER.index(own)
    for module in imports(path):
        layer = layer_of(module)
        if layer is None or layer == own:
            continue
        assert ORDER.index(layer) < rank, f"{rel} imports {module}: {layer} is above {own}"
