"""Where served versions come from: a local registry, or a server registry through a lazy clone.

A *source* answers two questions, both cheap enough to ask several times a second:
``target(ref)`` — which version id a ref names now (for an alias or branch one indexed query
on the refs table; tags, numbers and ids never move, so they are resolved once) — and
``materialize(vid)`` — a directory holding exactly that version's files: the registry's own
atomic, hash-verified checkout into a cache directory named by the version id, skipped when
that directory is complete already (a marker written after the checkout says so).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tvc.errors import StorageError, TvcError, UnknownRefError, UsageError
from tvc.registry import ModelRegistry
from tvc.repo import names
from tvc.repo import schema as s

COMPLETE = ".tvc-serve-complete"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvc" / "serve"


class Target:
    """What a ref names now: the version id and its ``MODEL@vN``."""

    __slots__ = ("number", "ref", "vid")

    def __init__(self, vid: str, ref: str, number: int) -> None:
        self.vid, self.ref, self.number = vid, ref, number

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and other.vid == self.vid

    def __hash__(self) -> int:
        return hash(self.vid)

    def __repr__(self) -> str:
        return f"Target({self.ref} {self.vid[:12]})"


class LocalSource:
    """A registry on this machine (a directory, SQLite or PostgreSQL metadata)."""

    kind = "local"

    def __init__(
        self, reg: ModelRegistry, model: str, cache: Path, seeds: tuple[Path, ...] = ()
    ) -> None:
        names.check_model_name(model)
        self.reg, self.model, self.cache = reg, model, Path(cache)
        self.seeds = tuple(Path(p) for p in seeds)  # read-only caches (KServe's /mnt/models)
        self._fixed: dict[str, Target] = {}
        self._lock = threading.Lock()  # one checkout at a time into the cache
        self.where = str(reg.root) if hasattr(reg, "root") else str(reg.dir.parent)

    def _movable(self, ref: str) -> bool:
        parsed = names.parse_ref(f"{self.model}@{ref}")
        return "~" not in ref and parsed.model == self.model

    def target(self, ref: str) -> Target:
        """The version ``MODEL@ref`` names now (one indexed query for an alias or branch)."""
        if ref in self._fixed:
            return self._fixed[ref]
        r, mo, v = s.refs.c, s.models.c, s.versions.c
        q = (
            sa.select(r.kind, v.id, v.number)
            .join_from(s.refs, s.models, r.model_id == mo.id)
            .join(s.versions, r.version_id == v.id)
            .where(mo.name == self.model, mo.deleted.is_(None), r.name == ref)
            .where(r.kind.in_(("alias", "branch")))
        )
        with self.reg.meta.read() as conn:
            rows = conn.execute(q).all()
        if len(rows) == 1:
            _kind, vid, number = rows[0]
            return Target(vid, f"{self.model}@v{number}", number)
        version = self.reg.resolve(f"{self.model}@{ref}")  # tags, vN, ids: never move
        t = Target(version.id, version.ref, version.number)
        if not rows:
            self._fixed[ref] = t
        return t

    def materialize(self, target: Target) -> Path:
        for seed in self.seeds:
            if (seed / target.vid / COMPLETE).exists():
                return seed / target.vid
        dest = self.cache / target.vid
        if (dest / COMPLETE).exists():
            return dest
        with self._lock:
            if not (dest / COMPLETE).exists():
                self.cache.mkdir(parents=True, exist_ok=True)
                self.reg.checkout(f"{self.model}@{target.vid}", dest, force=True)
                (dest / COMPLETE).write_bytes(b"")
        return dest

    def close(self) -> None:
        self.reg.close()


def split_url(spec: str) -> tuple[str, str]:
    """``http://host[:port][/prefix]/MODEL@REF`` → (server URL, ``MODEL@REF``)."""
    base, _, tail = spec.rstrip("/").rpartition("/")
    if not base or "://" not in base or base.endswith(":/"):
        raise UsageError(f"{spec!r}: expected http(s)://HOST[:PORT]/MODEL@REF")
    return base, tail


class RemoteSource(LocalSource):
    """A server registry: a lazy clone in the cache (metadata only; the chunks a checkout
    reads are fetched when it reads them), the server asked which version the ref names."""

    kind = "server"

    def __init__(
        self, url: str, model: str, cache: Path, token: str | None, seeds: tuple[Path, ...] = ()
    ) -> None:
        import httpx

        from tvc.api import Registry

        self.url, self.token = url, token
        key = hashlib.blake2b(f"{url} {model}".encode(), digest_size=8).hexdigest()
        clone_dir = Path(cache) / "registries" / key
        Registry.clone(url, clone_dir, models=[model], token=token, lazy=True)
        super().__init__(Registry(clone_dir), model, cache, seeds)
        self.where = f"{url}/{model}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=10.0)

    def target(self, ref: str) -> Target:
        """The server resolves the ref (its refs listing has no aliases); a version the clone
        lacks is pulled (metadata only) before it is used."""
        from tvc.remote.transport import error_from

        if ref in self._fixed:
            return self._fixed[ref]
        try:
            resp = self.http.get(f"/api/v1/versions/{self.model}@{ref}")
        except Exception as exc:
            raise StorageError(f"cannot reach {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text[:200]
            raise error_from(resp.status_code, body)
        vid = resp.json()["id"]
        try:
            v = self.reg.resolve(f"{self.model}@{vid}")
        except UnknownRefError:
            self.reg.pull("origin", self.model, token=self.token)
            v = self.reg.resolve(f"{self.model}@{vid}")
        return Target(v.id, v.ref, v.number)

    def close(self) -> None:
        self.http.close()
        super().close()


def open_source(
    spec: str, cache: Path, token: str | None = None, seeds: tuple[Path, ...] = ()
) -> tuple[Any, str, str]:
    """(source, model, ref) for ``MODEL[@REF]`` in the registry found as the CLI finds it, or
    ``http(s)://HOST/MODEL@REF`` on a server."""
    from tvc.remote.transport import is_url

    if is_url(spec):
        url, tail = split_url(spec)
        model, _, ref = tail.partition("@")
        try:
            return RemoteSource(url, model, cache, token, seeds), model, ref or "main"
        except TvcError:
            raise
    raise UsageError("open_source: a local registry is opened by the caller")
