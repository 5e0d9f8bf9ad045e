"""The registry layer: what a model registry adds to versions — lifecycle states with an audit
trail and gates, aliases with history and rollback, metrics added after the commit, lineage
(code commit, data sets, base models) and search.

:class:`ModelRegistry` is this layer's API; the public facade ``tvc.Registry`` (in
:mod:`tvc.api`) extends it with the layers above (analysis, remote). One module per concept:
``lifecycle`` (states, transitions, gates), ``aliases`` (moves, history, rollback), ``metrics``
(added later), ``provenance`` (code and data sets at commit), ``lineage`` (the graph),
``query`` (the expression language of search and gates), ``search``, ``audit``,
``removal`` (``rm`` and the retention rule of gc).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvc.errors import UnknownRefError, UsageError
from tvc.registry import provenance
from tvc.registry.aliases import AliasesMixin, AliasEvent
from tvc.registry.audit import AuditMixin
from tvc.registry.lifecycle import GateFailure, Lifecycle, LifecycleMixin, StateEvent
from tvc.registry.lineage import Lineage, LineageMixin
from tvc.registry.metrics import MetricEvent, MetricsMixin
from tvc.registry.removal import RemovalMixin
from tvc.registry.search import SearchMixin
from tvc.repo import names, paths
from tvc.repo.repository import CommitResult, Progress, Repository
from tvc.repo.version import Version

if TYPE_CHECKING:
    from tvc.repo.reader import VersionReader


def __getattr__(name: str) -> Any:
    """``VersionReader`` loads on first use: it needs numpy, which ``log`` and ``ls`` do not;
    ``QuerySyntaxError`` with the query language, which only search and gates need."""
    if name == "VersionReader":
        from tvc.repo.reader import VersionReader

        return VersionReader
    if name == "QuerySyntaxError":
        from tvc.registry.query import QuerySyntaxError

        return QuerySyntaxError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ModelRegistry(
    RemovalMixin,
    LifecycleMixin,
    AliasesMixin,
    MetricsMixin,
    SearchMixin,
    LineageMixin,
    AuditMixin,
    Repository,
):
    """Versions plus lifecycle, aliases, metrics added later, lineage, search and audit."""

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", **where: str | None) -> ModelRegistry:
        """Create a registry at ``path``; ``store=URL``/``metadata=URL`` put its packs or its
        metadata DB elsewhere (default: local packs, SQLite in ``.tvc/``)."""
        Repository.init(path, **where).close()
        return cls(path)

    def open(self, ref: str) -> VersionReader:
        """A reader over one version: ``.files``, ``.read(path)``, ``.tensor(name)``."""
        from tvc.repo.reader import VersionReader  # numpy: only for reading tensors

        return VersionReader(self, self.resolve(ref))

    def commit(
        self,
        model: str,
        paths_: paths.PathArgs,
        message: str = "",
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        datasets: Mapping[str, Any] | None = None,
        store_datasets: bool = False,
        code: dict[str, Any] | None = None,
        detect_code: bool = True,
        state: str | None = None,
        progress: Progress | None = None,
        **kw: Any,
    ) -> CommitResult:
        """A new version with its lineage (see ``Repository.commit`` for the other options).

        ``datasets``: ``{name: PATH | "MODEL@REF" | ID | dict}`` — a path is recorded by
        content hash and size (and, with ``store_datasets``, versioned as the model
        ``datasets/NAME``), a ref of this registry by version, anything else as an id
        (with ``store_datasets``, a value that is neither a path nor has a ``:`` or ``@`` is
        taken for a missing file and refused).
        ``code``: recorded as given; when None (and ``detect_code``), the git commit of the
        working directory or the committed path, if any. The version starts in the lifecycle's
        initial state.
        """
        params = provenance.check_values(params, "params")
        metrics = provenance.check_values(metrics, "metrics")
        if code is None and detect_code:
            code = provenance.detect_code(paths.as_list(paths_))
        recorded = self._record_datasets(datasets, store=store_datasets)
        return super().commit(
            model,
            paths_,
            message,
            params=params,
            metrics=metrics,
            datasets=recorded,
            code=code,
            state=state or self.lifecycle_machine().initial,
            progress=progress,
            **kw,
        )

    # -- data sets ---------------------------------------------------------------------
    def _record_datasets(
        self, datasets: Mapping[str, Any] | None, *, store: bool
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in (datasets or {}).items():
            if not isinstance(name, str) or not name:
                raise UsageError(f"data set name {name!r}: expected a non-empty string")
            if isinstance(spec, Mapping):
                out[name] = dict(spec)
                continue
            if isinstance(spec, os.PathLike) or (isinstance(spec, str) and Path(spec).exists()):
                path = Path(spec)
                record, per_file = provenance.hash_dataset(path)
                if store:
                    record.update(self.store_dataset(name, path, per_file))
                out[name] = record
                continue
            if not isinstance(spec, str):
                raise UsageError(f"data set {name}: expected a path, MODEL@REF or id")
            if store and ":" not in spec and "@" not in spec:
                # meant as a file to store (an id would look like hf:name, a ref like m@v1)
                raise UsageError(f"--store-dataset: {name}={spec}: no such file or directory")
            out[name] = self._dataset_ref(spec) or {"id": spec}
        return out

    def _dataset_ref(self, spec: str) -> dict[str, Any] | None:
        """``MODEL@REF`` of a model in this registry → its version; else None (an opaque id)."""
        if "@" not in spec:
            return None
        try:
            ref = names.parse_ref(spec)
        except UsageError:
            return None
        if not any(m["model"] == ref.model for m in self.models()):
            return None
        v = self.resolve(ref)
        return {"version": v.ref, "version_id": v.id}

    def store_dataset(
        self,
        name: str,
        path: str | os.PathLike[str],
        per_file: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Version a data set's files as the model ``datasets/NAME`` (unchanged data reuses the
        head version); returns ``{"version": "datasets/NAME@vN", "version_id": id}``."""
        model = f"{provenance.DATASET_NAMESPACE}/{name}"
        try:
            names.check_model_name(model)
        except UsageError:
            raise UsageError(
                f"data set name {name!r} cannot be stored: use lowercase letters, digits, "
                "'.', '_', '-'"
            ) from None
        path = Path(path)
        if per_file is None:
            per_file = provenance.hash_dataset(path)[1]
        try:
            head = self.resolve(model)
        except UnknownRefError:
            head = None
        if head is not None and {f.path: f.digest for f in head.files} == per_file:
            version = head
        else:
            version = Repository.commit(
                self,
                model,
                [path],
                f"data set {name}",
                parse=False,
                state=self.lifecycle_machine().initial,
            ).version
        return {"version": version.ref, "version_id": version.id}


__all__ = [
    "AliasEvent",
    "CommitResult",
    "GateFailure",
    "Lifecycle",
    "Lineage",
    "MetricEvent",
    "ModelRegistry",
    "QuerySyntaxError",
    "StateEvent",
    "Version",
    "VersionReader",
]
