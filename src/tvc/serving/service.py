"""The service: which loaded version answers a request, and how it follows its alias.

Vocabulary
- *slot*: one followed ref (``production``, or each side of a traffic split) with its weight,
  the :class:`Loaded` version serving it now, and the last failed load.
- *follower*: one thread that polls every slot's ref (:meth:`Source.target`, one indexed query)
  and, when it names another version, checks that version out into the cache, loads it
  *beside* the serving one, warms it with one request, and swaps one reference. A request reads
  the reference once when it starts, so requests in flight finish on the version they began
  on; a load that fails leaves the old version serving and is reported (log, ``/metrics``,
  ``tvc serve status``); it is tried again only when the ref moves again.
- *split*: weights over slots; a request that carries a client key (header ``x-tvc-client``)
  always lands in the same slot for the same weights (sticky), others are drawn at random.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvc.errors import TvcError, UnknownRefError, UsageError
from tvc.serving import flavors
from tvc.serving.metrics import Metrics
from tvc.serving.source import Target

log = logging.getLogger("tvc.serve")


@dataclass(frozen=True)
class Loaded:
    """A version loaded and warmed: what a request's answer is computed by."""

    target: Target
    model: flavors.Model
    path: Path
    at: float

    @property
    def name(self) -> str:  # "v3", the OIP model_version
        return f"v{self.target.number}"


@dataclass
class Slot:
    ref: str
    weight: int = 100
    current: Loaded | None = None
    previous: Loaded | None = None
    failed: Target | None = None
    error: str | None = None
    error_at: float | None = None
    swaps: int = 0

    def to_json(self) -> dict[str, Any]:
        cur = self.current
        return {
            "ref": self.ref,
            "weight": self.weight,
            "version": cur.target.ref if cur else None,
            "version_id": cur.target.vid if cur else None,
            "since": cur.at if cur else None,
            "swaps": self.swaps,
            "failed_version": self.failed.ref if self.failed else None,
            "error": self.error,
            "error_at": self.error_at,
        }


def parse_split(text: str) -> list[tuple[str, int]]:
    """``production=90,canary=10`` → [("production", 90), ("canary", 10)]."""
    out: list[tuple[str, int]] = []
    for part in text.split(","):
        ref, eq, weight = part.strip().partition("=")
        if not eq or not ref or not weight.strip().isdigit():
            raise UsageError(f"--split: expected REF=WEIGHT[,REF=WEIGHT...], not {part!r}")
        out.append((ref.strip(), int(weight)))
    if len({r for r, _ in out}) != len(out):
        raise UsageError("--split names a ref twice")
    if sum(w for _, w in out) <= 0:
        raise UsageError("--split: the weights add up to 0")
    return out


class Service:
    """A model served from ``source``: its slots, the follower thread, and routing."""

    def __init__(
        self,
        source: Any,
        model: str,
        refs: list[tuple[str, int]],
        *,
        name: str | None = None,
        flavor: str = "auto",
        trust_pickle: bool = False,
        poll: float = 0.25,
    ) -> None:
        self.source = source
        self.model = model
        self.name = name or model.replace("/", "--")
        self.flavor = flavor
        self.trust_pickle = trust_pickle
        self.poll = poll
        self.slots = [Slot(ref, weight) for ref, weight in refs]
        self.metrics = Metrics(self.name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self.polls = 0
        self.poll_error: str | None = None

    # -- loading -----------------------------------------------------------------------------
    def _load(self, target: Target) -> Loaded:
        for slot in self.slots:  # the other side of a split may have it loaded already
            for have in (slot.current, slot.previous):
                if have is not None and have.target == target:
                    return have
        t0 = time.perf_counter()
        path = self.source.materialize(target)
        model = flavors.load(path, self.flavor, trust_pickle=self.trust_pickle)
        try:
            model.warm()
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise TvcError(f"warming {target.ref} failed: {type(exc).__name__}: {detail}") from None
        self.metrics.load_seconds.observe(time.perf_counter() - t0)
        return Loaded(target, model, path, time.time())

    def start(self, follow: bool = True) -> None:
        """Load every slot's version now (an error here stops the service: nothing to serve),
        then follow the refs in the background."""
        for slot in self.slots:
            target = self.source.target(slot.ref)
            slot.current = self._load(target)
            self.metrics.serving(slot.ref, slot.current)
            log.info("serving %s@%s = %s", self.model, slot.ref, target.ref)
        if follow:
            self._thread = threading.Thread(target=self._follow, name="tvc-serve-follow")
            self._thread.daemon = True
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll):
            self.poll_once()

    def poll_once(self) -> None:
        """Ask every slot's ref once; load, warm and swap in what moved."""
        self.polls += 1
        for slot in self.slots:
            try:
                target = self.source.target(slot.ref)
                self.poll_error = None
            except TvcError as exc:  # e.g. the alias was removed, a server down: keep serving
                if self.poll_error != exc.message:
                    log.warning(
                        "%s@%s: %s (still serving the last version)", self.model, slot.ref, exc
                    )
                self.poll_error = exc.message
                self.metrics.poll_errors.inc()
                continue
            cur = slot.current
            if cur is not None and cur.target == target:
                continue
            if slot.failed == target:
                continue  # reported already; tried again when the ref moves
            try:
                loaded = self._load(target)
            except TvcError as exc:
                slot.failed, slot.error, slot.error_at = target, exc.message, time.time()
                self.metrics.load_failed(slot.ref)
                log.error(
                    "%s@%s moved to %s, which failed to load: %s; still serving %s",
                    self.model,
                    slot.ref,
                    target.ref,
                    exc.message,
                    cur.target.ref if cur else "nothing",
                )
                continue
            slot.previous, slot.current = cur, loaded  # the swap: one reference
            slot.failed = slot.error = slot.error_at = None
            slot.swaps += 1
            self.metrics.serving(slot.ref, loaded)
            log.info("%s@%s: now serving %s", self.model, slot.ref, target.ref)

    # -- routing -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return all(s.current is not None for s in self.slots)

    def choose(self, client: str | None) -> Slot:
        """The slot a request goes to: by weight, the same one for the same client key."""
        if len(self.slots) == 1:
            return self.slots[0]
        total = sum(s.weight for s in self.slots)
        if client:
            digest = hashlib.blake2b(client.encode(), digest_size=8).digest()
            point = int.from_bytes(digest, "big") % total
        else:
            point = random.randrange(total)
        for slot in self.slots:
            if point < slot.weight:
                return slot
            point -= slot.weight
        return self.slots[-1]

    def loaded(self) -> list[Loaded]:
        out: dict[str, Loaded] = {}
        for slot in self.slots:
            for have in (slot.current, slot.previous):
                if have is not None:
                    out.setdefault(have.target.vid, have)
        return list(out.values())

    def version(self, v: str) -> Loaded:
        """A loaded version by ``vN`` or id (prefix ≥ 8): the versioned OIP paths."""
        for have in self.loaded():
            t = have.target
            if v == have.name or (len(v) >= 8 and t.vid.startswith(v)):
                return have
        versions = ", ".join(h.name for h in self.loaded())
        raise UnknownRefError(f"version {v} of {self.name} is not loaded here (loaded: {versions})")

    def status(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "name": self.name,
            "source": getattr(self.source, "where", "?"),
            "flavor": self.flavor,
            "ready": self.ready,
            "started": self.started,
            "poll_seconds": self.poll,
            "polls": self.polls,
            "poll_error": self.poll_error,
            "slots": [s.to_json() for s in self.slots],
        }


@dataclass
class Answer:
    """What the app needs from a prediction: the version that answered, and its outputs."""

    loaded: Loaded
    slot: Slot | None
    outputs: dict[str, Any] = field(default_factory=dict)
