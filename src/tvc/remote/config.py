"""Where remotes and logins are kept.

- A registry's remotes: ``.tvc/remotes.json`` ({name: path or URL}); ``tvc clone`` writes
  ``origin``.
- Logins: ``$XDG_CONFIG_HOME/tvc/credentials.json`` (default ``~/.config``), {server URL:
  token}, created 0600 — the token is a password. ``TVC_TOKEN`` overrides it for every server.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tvc.errors import ExistsError, UnknownRefError, UsageError
from tvc.store import durable

REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _remotes_file(regdir: Path) -> Path:
    return regdir / "remotes.json"


def remotes(regdir: Path) -> dict[str, str]:
    try:
        return json.loads(_remotes_file(regdir).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{_remotes_file(regdir)}: {exc}") from exc


def add_remote(regdir: Path, name: str, url: str, *, replace: bool = False) -> None:
    if not REMOTE_NAME.match(name):
        raise UsageError(f"invalid remote name {name!r}: use letters, digits, '.', '_', '-'")
    known = remotes(regdir)
    if name in known and not replace:
        raise ExistsError(f"remote {name!r} exists already ({known[name]})")
    known[name] = url
    durable.write_bytes(_remotes_file(regdir), json.dumps(known, indent=2).encode())


def remove_remote(regdir: Path, name: str) -> None:
    known = remotes(regdir)
    if name not in known:
        raise UnknownRefError(f"no remote {name!r} (remotes: {', '.join(known) or 'none'})")
    del known[name]
    durable.write_bytes(_remotes_file(regdir), json.dumps(known, indent=2).encode())


def remote_url(regdir: Path, name_or_url: str | None) -> str:
    """A remote's URL from its name (default ``origin``); a path or URL is taken as it is."""
    known = remotes(regdir)
    name = name_or_url or "origin"
    if name in known:
        return known[name]
    if name_or_url and ("/" in name_or_url or "://" in name_or_url):
        return name_or_url
    raise UnknownRefError(
        f"no remote {name!r} (remotes: {', '.join(known) or 'none'}; `tvc remote add`)"
    )


# -- logins ----------------------------------------------------------------------------------
def credentials_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tvc" / "credentials.json"


def _normal(url: str) -> str:
    return url.rstrip("/")


def save_login(url: str, token: str) -> Path:
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known[_normal(url)] = token
    data = json.dumps(known, indent=2).encode()
    fd = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(path.with_name(path.name + ".tmp"), path)
    return path


def token_for(url: str) -> str | None:
    env = os.environ.get("TVC_TOKEN")
    if env:
        return env
    try:
        known = json.loads(credentials_file().read_text())
    except (OSError, ValueError):
        return None
    return known.get(_normal(url))
