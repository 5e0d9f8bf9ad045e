"""Merge bases: the nearest common ancestor of two versions.

History is a graph over version ids: every version points at its parents (the first one is the
branch head it was committed on; a merge adds the other side) and optionally at a ``base``
version of another model (the model it was fine-tuned from). Two versions of one model meet
over parent links; two fine-tunes of one base model meet only through their ``base`` links, so
those are followed when parent links alone find nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvc.repo.repository import Repository
    from tvc.repo.version import Version


@dataclass(frozen=True)
class MergeBase:
    version: Version | None
    via_base: bool  # found only by following ``base`` links (across models)
    candidates: tuple[str, ...]  # every best common ancestor (more than one: criss-cross)


class _Graph:
    """Versions loaded on demand (without their file lists), with the edges we follow."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.nodes: dict[str, Version] = {}

    def load_history(self, v: Version) -> None:
        if v.id in self.nodes:
            return
        # ``log`` walks every parent link in one connection; an id is a valid revision.
        for h in self.repo.log(f"{v.model}@{v.id}"):
            self.nodes.setdefault(h.id, h)

    def edges(self, vid: str, with_base: bool) -> list[str]:
        v = self.nodes[vid]
        out = list(v.parents)
        if with_base and v.base:
            out.append(v.base)
        return out

    def ancestors(self, start: Version, with_base: bool) -> set[str]:
        """``start`` and everything reachable from it (itself included)."""
        self.load_history(start)
        seen = {start.id}
        frontier = [start.id]
        while frontier:
            vid = frontier.pop()
            for nxt in self.edges(vid, with_base):
                if nxt in seen:
                    continue
                if nxt not in self.nodes:
                    self.load_history(self.repo.version(nxt))
                seen.add(nxt)
                frontier.append(nxt)
        return seen


def merge_base(repo: Repository, a: Version, b: Version) -> MergeBase:
    """The best common ancestor of ``a`` and ``b``: one no other common ancestor descends from.

    Several best ones (criss-cross history) → the newest, and all are listed in ``candidates``.
    """
    graph = _Graph(repo)
    for with_base in (False, True):
        common = graph.ancestors(a, with_base) & graph.ancestors(b, with_base)
        if not common:
            continue
        # Common ancestors are closed under "ancestor of", so the dominated ones are exactly
        # those reachable from a common ancestor's own parents: one walk finds them all.
        dominated: set[str] = set()
        frontier = [p for c in common for p in graph.edges(c, with_base)]
        while frontier:
            vid = frontier.pop()
            if vid not in dominated:
                dominated.add(vid)
                frontier.extend(graph.edges(vid, with_base))
        best = [graph.nodes[c] for c in common - dominated]
        best.sort(key=lambda v: (v.created, v.number), reverse=True)
        # ``log`` loads versions without their files; the merge needs them.
        return MergeBase(repo.version(best[0].id), with_base, tuple(v.id for v in best))
    return MergeBase(None, False, ())
