"""What runs on the power-loss file system until the power goes: one function per scenario.

Run as ``python workloads.py SCENARIO REGISTRY DIR...`` (the registry lives on the mount, the
model folders do not): it opens the registry, prints ``READY``, then runs the scenario forever,
printing a line for each acknowledged operation the moment the API call returned:

``VERSION <id> <k>``       a commit of ``DIR[k]`` returned this version
``MOVING <model> <alias> <id>``  an alias move is about to start (it may land unacknowledged)
``ALIAS <model> <alias> <id>``   that move returned
``DONE <what>``            a gc or an index rebuild returned (nothing to check by itself)

A scenario is one small function ``(reg, dirs, ack) -> None`` registered with ``@scenario``;
the test runs each registered one (see ``test_powerloss.py``).
"""

from __future__ import annotations

import inspect
import itertools
import random
import sys
from collections.abc import Callable

MODEL = "pl"
ALIAS = "production"

SCENARIOS: dict[str, Callable] = {}


def scenario(fn: Callable) -> Callable:
    SCENARIOS[fn.__name__] = fn
    return fn


def commit_one(reg, dirs: list[str], i: int, ack) -> str:
    k = i % len(dirs)
    v = reg.commit(MODEL, [dirs[k]], f"commit {i}", params={"i": i}).version
    ack("VERSION", v.id, k)
    return v.id


def rebuild_index(reg) -> Callable[[], object] | None:
    """How this tvc rebuilds its index (``tvc fsck --rebuild-index``), or None while it cannot."""
    if callable(getattr(reg, "rebuild_index", None)):
        return reg.rebuild_index
    if "rebuild_index" in inspect.signature(reg.fsck).parameters:
        return lambda: reg.fsck(rebuild_index=True)
    return None


@scenario
def commit(reg, dirs, ack):
    """Back-to-back commits: new packs, new pack directories, WAL growth and checkpoints."""
    for i in itertools.count():
        commit_one(reg, dirs, i, ack)


@scenario
def gc(reg, dirs, ack):
    """Commits with a gc after each: it deletes the packs and temp files killed commits left."""
    for i in itertools.count():
        commit_one(reg, dirs, i, ack)
        reg.gc()
        ack("DONE", "gc")


@scenario
def alias(reg, dirs, ack):
    """Alias moves between acknowledged versions, a commit now and then."""
    rng = random.Random()
    versions = [v.id for v in reg.log(MODEL, 1000)] if reg.models() else []
    for i in itertools.count():
        if len(versions) < 2 or i % 6 == 0:
            versions.append(commit_one(reg, dirs, i, ack))
        target = rng.choice(versions)
        ack("MOVING", MODEL, ALIAS, target)
        reg.alias(MODEL, ALIAS, target, reason=f"move {i}")
        ack("ALIAS", MODEL, ALIAS, target)


@scenario
def rebuild(reg, dirs, ack):
    """Index rebuilds (``fsck --rebuild-index``) between commits."""
    run = rebuild_index(reg)
    for i in itertools.count():
        commit_one(reg, dirs, i, ack)
        run()
        ack("DONE", "rebuild")


def main(argv: list[str]) -> None:
    import tvc

    name, registry, *dirs = argv
    reg = tvc.Registry(registry)

    def ack(*fields) -> None:
        print(*fields, flush=True)

    ack("READY")
    SCENARIOS[name](reg, dirs, ack)


if __name__ == "__main__":
    main(sys.argv[1:])
