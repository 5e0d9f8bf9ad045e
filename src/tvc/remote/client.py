"""A server used directly (SVN mode): ``tvc -R URL …``, ``TVC_REGISTRY=URL`` or
``tvc.Registry(URL)``, with no registry of your own.

:class:`RemoteClient` gives a server the Registry's whole public surface, so the CLI and the
Python API run unchanged against it. It keeps a *cache* — a lazy clone of what the token may
read, in ``$TVC_CACHE_DIR`` (default ``$XDG_CACHE_HOME/tvc``, else ``~/.cache/tvc``), one per
server and token — and:

- **reads** (log, show, ls, checkout, cat, diff, blame, lineage, alias and lifecycle history…)
  first bring the cache up to date with the server's metadata through the transfer endpoints
  (refs, version records, manifests, the state/alias/metric events; branches, tags, versions and
  models deleted there are deleted here), then run the ordinary registry code on it. File and
  tensor bytes are fetched by the lazy store when a read needs them, verified, and kept.
- **writes** go to the server, which runs its own registry methods with its own config (gates,
  lifecycle, compare-and-swap) and records them as the token's name
  (:mod:`tvc.server.registry_api`). ``search``, ``audit`` and ``stats`` are answered there too.
- **commit** runs the ordinary commit pipeline here — parsing, chunking, hashing, encoding
  (delta against the parent's tensors: those chunks are fetched first if the cache lacks them)
  into the cache's store — then sends only the objects the server lacks and asks it to record the
  version and move the branch by compare-and-swap; the server numbers it. If the branch moved
  there meanwhile the version is re-parented on the new head and sent again, as a local commit
  does when another commit won the race.

The cache never numbers a version itself: every version in it came from the server with the
server's number, so ``MODEL@vN`` means the same here and there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tvc.errors import ConflictError, ExistsError, UsageError
from tvc.registry import ModelRegistry
from tvc.registry.lifecycle import Lifecycle
from tvc.repo import names
from tvc.repo import schema as s
from tvc.repo.files import NoProgress
from tvc.repo.repository import REGISTRY_DIR, Repository, _BranchMoved
from tvc.repo.version import Version
from tvc.store import durable

# Public methods that read the registry: each (when not called from inside another) first
# brings the cache up to date with the server.
READS = (
    "resolve",
    "version",
    "log",
    "show",
    "models",
    "refs_of",
    "refs_pointing_at",
    "refs_of_versions",
    "checkout",
    "read",
    "iter_file",
    "open",
    "diff",
    "blame",
    "merge",
    "aliases",
    "alias_history",
    "state_history",
    "metric_history",
    "committed_metrics",
    "lineage",
)


REFRESH_ATTEMPTS = 5
STATE_FILE = "server-state"  # in the cache's .tvc/: the server's digest when last refreshed


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def is_url(where: object) -> bool:
    return isinstance(where, str) and where.startswith(("http://", "https://"))


def cache_root(url: str, token: str | None) -> Path:
    """The cache of one server as seen by one token: a token sees only its models, so two
    tokens never share a cache (the key hashes the token; the token itself is not stored)."""
    base = os.environ.get("TVC_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "tvc")
    url = url.rstrip("/")
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", url.split("://", 1)[-1])[:60]
    key = hashlib.sha256(f"{url}\0{token or ''}".encode()).hexdigest()[:16]
    return Path(base) / f"{host}-{key}"


class RemoteClient:
    """The Registry API against a ``tvc server`` (mixed in before ``tvc.Registry``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        from tvc.remote.config import token_for
        from tvc.remote.lazy import LazyChunkStore, mark_lazy
        from tvc.remote.transport import HttpTransport

        url = url or os.environ.get("TVC_REGISTRY") or ""
        if not is_url(url):
            raise UsageError(f"not a server URL: {url!r} (expected http:// or https://)")
        self.url = url.rstrip("/")
        self.token = token or token_for(self.url)
        root = Path(cache) if cache is not None else cache_root(self.url, self.token)
        if not (root / REGISTRY_DIR / "config.toml").exists():
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(ExistsError):  # another command made it meanwhile
                Repository.init(root).close()
                mark_lazy(root / REGISTRY_DIR, self.url)
        super().__init__(root)
        self.store = LazyChunkStore(self.store, self, token=self.token)
        self.remote = HttpTransport(self.url, self.token)
        self.last_upload = None  # the Transfer of the last commit's objects (bytes sent)
        # Python: every top-level read sees the server as it is now. The CLI (one command
        # per process) turns this off: one refresh before its first read, and after writes.
        self.auto_refresh = True
        self._stale = True
        self._depth = 0
        self._lock = threading.RLock()
        self._server_config: dict[str, Any] | None = None

    def close(self) -> None:
        self.remote.close()
        super().close()

    def __repr__(self) -> str:
        return f"<tvc.Registry {self.url}>"

    # -- keeping the cache fresh -----------------------------------------------------------
    @contextlib.contextmanager
    def _fresh(self) -> Iterator[None]:
        """Refresh before the outermost read (with ``auto_refresh``; else only before the
        first one and after a write); calls made inside it see that state."""
        with self._lock:
            if self._depth == 0 and (self.auto_refresh or self._stale):
                self.refresh()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    @contextlib.contextmanager
    def _after_write(self) -> Iterator[None]:
        """Read what a write on the server did: the cache refreshed first, whatever the mode."""
        self._stale = True
        with self._fresh():
            yield

    def refresh(self) -> None:
        """Bring the cache to the server's state: new versions (metadata only), branches and
        tags where they are there, the events of states, aliases and metrics; what was
        deleted there is deleted here. Another command refreshing the same cache at the same
        time may win a branch move here: then this one looks again."""
        from tvc.remote import sync

        with self._lock:
            self._depth += 1
            try:
                # One request says whether anything changed since this cache last looked
                # (read before the pull: a change during it shows next time).
                state = self.remote.api("GET", "/state")["state"]
                mark = self.dir / STATE_FILE
                if _read(mark) != state:
                    for attempt in range(REFRESH_ATTEMPTS):
                        try:
                            sync.pull(self, self.remote, [], force=True, lazy=True)
                            self._drop_gone()
                            break
                        except ConflictError:
                            if attempt == REFRESH_ATTEMPTS - 1:
                                raise
                    durable.write_bytes(mark, state.encode())
                self._stale = False
            finally:
                self._depth -= 1

    def _drop_gone(self) -> None:
        base = ModelRegistry
        there = {m["model"] for m in self.remote.api("GET", "/models")["models"]}
        for m in base.models(self):
            if m["model"] not in there:
                base.rm_model(self, m["model"], force=True, reason="deleted on the server")
        v, mo = s.versions.c, s.models.c
        with self.meta.read() as conn:
            live = conn.execute(
                sa.select(v.id, mo.name)
                .join_from(s.versions, s.models, v.model_id == mo.id)
                .where(v.deleted.is_(None), mo.deleted.is_(None))
            ).all()
        if live:
            kept = self.remote.recorded([vid for vid, _m in live])
            for vid, model in live:
                if vid not in kept:
                    base.rm(self, f"{model}@{vid}", force=True, reason="deleted on the server")
        refs = {(r["model"], r["kind"], r["name"]) for r in self.remote.refs(None)}
        for m in base.models(self):
            for r in base.refs_of(self, m["model"]):
                if (
                    r["kind"] in ("branch", "tag")
                    and (m["model"], r["kind"], r["name"]) not in refs
                ):
                    base._delete_ref(self, r["kind"], m["model"], r["name"])

    # -- commit: hashed and encoded here, recorded there -----------------------------------
    def commit(self, *args: Any, **kw: Any):
        """``Registry.commit`` against the server (see the module doc). Its dedup lookups ask
        the cache only: a chunk the cache lacks is encoded here and then not sent if the
        server has it — fetching it to learn that would move more bytes than it saves."""
        with self._fresh():  # (the lazy store's local lookups: RemoteMixin.commit)
            return super().commit(*args, **kw)

    def _record_version(
        self,
        *,
        model: str,
        branch: str,
        seen: str | None,
        parent: str | None,
        vid: str,
        parents: list[str],
        entries: list,
        session: Any,
        meta: dict[str, Any],
        tags: list[str] | tuple[str, ...],
        state: str,
    ) -> Version:
        """Index the commit's objects in the cache, send the server what it lacks, and have
        it record the version and move the branch from ``seen`` (compare-and-swap)."""
        from tvc.remote import sync

        with self.meta.write() as conn:
            self._index_objects(conn, entries, session)
        # Indexed: no longer this session's to delete if the commit fails from here on.
        session.packs.clear()
        ids = [vid, *(m.id for _fe, m in entries)]
        ids += list(dict.fromkeys(cid for _fe, m in entries for cid, _n in m.chunks))
        if seen is None:  # a new branch starts at main's head: the server's, not a stale one
            heads = self._heads(model)
            if heads.get(branch) is None and heads.get(names.DEFAULT_BRANCH) != parent:
                raise _BranchMoved(heads.get(branch), heads.get(names.DEFAULT_BRANCH))
        t = sync.Transfer("commit", self.url)
        sync._send(self, self.remote, ids, t, NoProgress())
        self.last_upload = t
        try:
            self.remote.record(
                model,
                [vid],
                moves=[[branch, seen, vid]],
                tags={tag: vid for tag in tags},
            )
        except ConflictError:
            heads = self._heads(model)
            now = heads.get(branch)
            if now != seen:  # another commit won the race: re-parent on it
                main = heads.get(names.DEFAULT_BRANCH)
                raise _BranchMoved(now, now if now is not None else main) from None
            raise
        self.refresh()
        return Repository.version(self, vid)

    def _heads(self, model: str) -> dict[str, str]:
        return {
            r["name"]: r["id"]
            for r in self.remote.refs([model])
            if r["model"] == model and r["kind"] == "branch"
        }

    # -- writes: the server's registry does them -------------------------------------------
    def _post(self, path: str, **body: Any) -> dict[str, Any]:
        return self.remote.api("POST", path, json=body)

    def set_alias(self, model: str, alias: str, ref: str, *, reason: str = "", force: bool = False):
        got = self._post(
            "/aliases/set", model=model, alias=alias, ref=ref, reason=reason, force=force
        )
        if got["event"] is None:
            return None
        with self._after_write():
            return super().alias_history(model, alias)[-1]

    alias = set_alias

    def remove_alias(self, model: str, alias: str, *, reason: str = ""):
        self._post("/aliases/remove", model=model, alias=alias, reason=reason)
        with self._after_write():
            return super().alias_history(model, alias)[-1]

    def rollback(
        self, model: str, alias: str, *, to: str | None = None, reason: str = "", force=False
    ):
        self._post(
            "/aliases/rollback", model=model, alias=alias, ref=to, reason=reason, force=force
        )
        with self._after_write():
            return super().alias_history(model, alias)[-1]

    def set_state(self, ref: str, state: str, *, reason: str = "", force: bool = False):
        got = self._post("/lifecycle/set", ref=ref, state=state, reason=reason, force=force)
        if got["event"] is None:
            return None
        with self._after_write():
            vid = super().resolve(ref).id
            return next(e for e in reversed(super().state_history(ref)) if e.id == vid)

    def add_metrics(self, ref: str, metrics: dict[str, Any], *, reason: str = "") -> Version:
        got = self._post("/metrics/add", ref=ref, metrics=metrics, reason=reason)
        with self._after_write():
            return super().version(got["id"])

    def branch(self, model: str, name: str, start: str | None = None) -> Version:
        got = self._post("/refs/create", model=model, kind="branch", name=name, ref=start)
        with self._after_write():
            return super().version(got["id"])

    def tag(self, model: str, name: str, ref: str | None = None) -> Version:
        got = self._post("/refs/create", model=model, kind="tag", name=name, ref=ref)
        with self._after_write():
            return super().version(got["id"])

    def delete_branch(self, model: str, name: str) -> None:
        self._post("/refs/delete", model=model, kind="branch", name=name)
        self._stale = True

    def delete_tag(self, model: str, name: str) -> None:
        self._post("/refs/delete", model=model, kind="tag", name=name)
        self._stale = True

    def rm(self, ref: str, *, force: bool = False, reason: str = "") -> list[Version]:
        names.parse_ref(ref)
        return self._removed(self._post("/rm", target=ref, force=force, reason=reason))

    def rm_model(self, model: str, *, force: bool = False, reason: str = "") -> list[Version]:
        names.check_model_name(model)
        return self._removed(self._post("/rm", target=model, force=force, reason=reason))

    def _removed(self, got: dict[str, Any]) -> list[Version]:
        with self._after_write():
            return [super(RemoteClient, self).version(i) for i in got["ids"]]

    # -- answered by the server -------------------------------------------------------------
    def search(
        self,
        text: str = "",
        *,
        model: str | None = None,
        order_by: str | list[str] | None = None,
        limit: int | None = None,
    ) -> list[Version]:
        keys = [order_by] if isinstance(order_by, str) else list(order_by or [])
        params: list[tuple[str, Any]] = [("q", text)] + [("order_by", k) for k in keys]
        if model is not None:
            params.append(("model", model))
        if limit is not None:
            if limit < 0:
                raise UsageError(f"--limit must be ≥ 0, got {limit}")
            params.append(("limit", min(limit, 2**31 - 1)))
        ids = self.remote.api("GET", "/search", params=params)["ids"]
        with self._after_write():  # not a write, but its answer may name versions new here
            return [super(RemoteClient, self).version(i) for i in ids]

    def audit(self, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("model", model), ("limit", limit)) if v is not None}
        return self.remote.api("GET", "/audit", params=params)["events"]

    def stats(self) -> dict[str, Any]:
        return self.remote.api("GET", "/stats")

    def _config_of_server(self) -> dict[str, Any]:
        if self._server_config is None:
            got = self.remote.api("GET", "/lifecycle")
            self._server_config = {"lifecycle": got["lifecycle"], "gates": got["gates"]}
            self.config = {**self.config, **self._server_config}
        return self._server_config

    def check_gate(self, gate: str, ref: str):
        self._config_of_server()  # the server's gates, not the cache's (none)
        with self._fresh():
            return super().check_gate(gate, ref)

    def lifecycle(self) -> Lifecycle:
        return Lifecycle.from_config(self._config_of_server())

    def lifecycle_machine(self) -> Lifecycle:
        return Lifecycle.from_config({"lifecycle": self._config_of_server()["lifecycle"]})

    # -- what only the server's own data directory does --------------------------------------
    def _there(self, what: str):
        raise UsageError(
            f"{what} runs where the registry is: on the server's data directory "
            f"(tvc -R DIR {what}), not against {self.url}"
        )

    def fsck(self, *a: Any, **kw: Any):
        self._there("fsck")

    def gc(self, *a: Any, **kw: Any):
        self._there("gc")

    def rebuild_index(self, *a: Any, **kw: Any):
        self._there("fsck --rebuild-index")

    def retention(self, *a: Any, **kw: Any):
        self._there("gc --keep-last")

    def _no_remote(self, what: str):
        raise UsageError(
            f"{what}: {self.url} is used directly (SVN mode); clone it to push and pull "
            "(tvc clone URL DIR)"
        )

    def push(self, *a: Any, **kw: Any):
        self._no_remote("push")

    def pull(self, *a: Any, **kw: Any):
        self._no_remote("pull")

    def fetch(self, *a: Any, **kw: Any):
        self._no_remote("fetch")

    def fill(self, *a: Any, **kw: Any):
        self._no_remote("fetch")


def _synced(name: str):
    def method(self: RemoteClient, *args: Any, **kw: Any) -> Any:
        with self._fresh():
            return getattr(super(RemoteClient, self), name)(*args, **kw)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``{name}`` on the server's state (the cache refreshed first)."
    return method


for _name in READS:
    setattr(RemoteClient, _name, _synced(_name))
