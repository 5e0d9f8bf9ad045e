"""Where a registry is and what its files must say, with the standard library only.

Separate from :mod:`tvc.repo.repository` so that a command's cold start can find the registry
and read its config without loading SQLAlchemy (see :mod:`tvc.repo.coldread`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from tvc.errors import NotARegistryError, PathError

REGISTRY_DIR = ".tvc"
FORMAT_VERSION = 1
# The Alembic revision the code expects (tvc/repo/migrations/versions); db.migrate brings a DB
# there, and a cold read path only trusts a DB that is there already.
SCHEMA_HEAD = "0004_tokens"


def find_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding ``.tvc``: ``start`` itself, or the nearest parent that has one."""
    env = os.environ.get("TVC_DIR")
    if start is None and env:
        start = env
    try:
        here = Path(start or os.getcwd()).absolute()
    except FileNotFoundError:
        raise PathError("the working directory no longer exists (cd somewhere)") from None
    if here.name == REGISTRY_DIR and (here / "config.toml").is_file():
        return here.parent
    if start is not None:
        if (here / REGISTRY_DIR / "config.toml").is_file():
            return here
        raise NotARegistryError(f"no tvc registry at {here} (run `tvc init`)")
    for cand in (here, *here.parents):
        if (cand / REGISTRY_DIR / "config.toml").is_file():
            return cand
    raise NotARegistryError(
        f"not in a tvc registry: no {REGISTRY_DIR}/ in {here} or its parents (run `tvc init`)"
    )


def read_config(regdir: Path) -> dict[str, Any]:
    """``.tvc/config.toml`` as a dict; unreadable or malformed → NotARegistryError."""
    try:
        return tomllib.loads((regdir / "config.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NotARegistryError(f"{regdir}/config.toml: {exc}") from exc
