"""What this registry last saw of each remote: git's remote-tracking refs, for tvc.

After every push, pull, fetch and clone, ``.tvc/remote-refs/<remote>.json`` holds the remote's
branch heads and, for versions numbered differently there, the remote's number. ``tvc log``
and ``tvc show`` print them beside the local refs (``origin/main``, ``origin: v2``), so a
clone shows the remote's numbering where it differs, long after the transfer that found it.

They are data, not refs: they move only when a transfer talks to the remote; nothing resolves
them, keeps their versions alive or travels with them. The file is rewritten whole (durably),
so a reader sees one transfer's view or the one before. Standard library only: ``tvc log``'s
cold path reads it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DIR = "remote-refs"


def _path(regdir: Path, remote: str) -> Path:
    return Path(regdir) / DIR / f"{remote}.json"


def load(regdir: Path, remote: str) -> dict[str, Any]:
    """``{"url": …, "models": {model: {"branches": {name: id}, "numbers": {id: n}}}}``; an
    unreadable or foreign file counts as empty (it is a cache of the remote's state)."""
    try:
        doc = json.loads(_path(regdir, remote).read_text())
    except (OSError, ValueError):
        return {"models": {}}
    return doc if isinstance(doc, dict) and isinstance(doc.get("models"), dict) else {"models": {}}


def update(
    regdir: Path,
    remote: str,
    url: str,
    refs: list[dict[str, Any]],
    renumbered: list[dict[str, Any]],
) -> None:
    """Record the remote's branch heads (``refs`` as the transport lists them) for the models
    they cover, and its numbers of the versions a transfer found numbered differently."""
    from tvc.store import durable

    doc = load(regdir, remote)
    doc["url"] = url
    models: dict[str, Any] = doc["models"]
    for model in {r["model"] for r in refs}:
        entry = models.setdefault(model, {"branches": {}, "numbers": {}})
        entry["branches"] = {
            r["name"]: r["id"] for r in refs if r["model"] == model and r["kind"] == "branch"
        }
    for r in renumbered:
        entry = models.setdefault(r["model"], {"branches": {}, "numbers": {}})
        entry.setdefault("numbers", {})[r["id"]] = r["there"]
    target = _path(regdir, remote)
    durable.make_dirs(target.parent)
    durable.write_bytes(target, json.dumps(doc, indent=1, sort_keys=True).encode())


def decorations(regdir: Path, model: str) -> dict[str, list[tuple[str, str]]]:
    """{version id: [("remote", "origin/main"), ("remote", "origin: v2"), …]} for one model,
    from every remote this registry has talked to."""
    out: dict[str, list[tuple[str, str]]] = {}
    try:
        names = sorted(
            p.name[: -len(".json")]
            for p in os.scandir(Path(regdir) / DIR)
            if p.name.endswith(".json")
        )
    except OSError:
        return out
    for remote in names:
        entry = load(regdir, remote)["models"].get(model) or {}
        for branch, vid in sorted((entry.get("branches") or {}).items()):
            out.setdefault(vid, []).append(("remote", f"{remote}/{branch}"))
        for vid, n in sorted((entry.get("numbers") or {}).items()):
            out.setdefault(vid, []).append(("remote", f"{remote}: v{n}"))
    return out
