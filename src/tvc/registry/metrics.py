"""Metrics added to a version after its commit: evaluation happens after training.

The committed metrics are part of the version's content id and never change (``versions.metrics``,
which fsck re-hashes). Later ones go to ``versions.extra_metrics`` and, append-only, to
``metric_events`` (who, when, why, and what each key held before). A loaded Version shows the
two merged, later values winning; search and gates see the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tvc.errors import UsageError
from tvc.registry.provenance import check_values
from tvc.repo import schema as s
from tvc.repo.meta import default_author
from tvc.repo.version import Version, iso


@dataclass(frozen=True)
class MetricEvent:
    ref: str
    id: str
    metrics: dict[str, Any]  # the values set
    previous: dict[str, Any]  # what those keys held before (absent: new key)
    actor: str
    at: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "id": self.id,
            "metrics": self.metrics,
            "previous": self.previous,
            "actor": self.actor,
            "at": iso(self.at),
            "reason": self.reason,
        }


class MetricsMixin:
    """``add_metrics``, ``committed_metrics``, ``metric_history`` for ModelRegistry."""

    def add_metrics(self, ref: str, metrics: dict[str, Any], *, reason: str = "") -> Version:
        """Record metrics on an existing version (its id does not change); returns it."""
        metrics = check_values(metrics, "metrics")
        if not metrics:
            raise UsageError("no metrics given (KEY=VALUE)")
        with self.meta.write() as conn:
            self.meta.lock_model_of(conn, ref)
            v = self.resolve(ref, conn)
            vc = s.versions.c
            row = conn.execute(sa.select(vc.model_id, vc.extra_metrics).where(vc.id == v.id)).one()
            previous = {k: v.metrics[k] for k in metrics if k in v.metrics}
            extra = {**(row.extra_metrics or {}), **metrics}
            conn.execute(s.versions.update().where(vc.id == v.id).values(extra_metrics=extra))
            self.meta.record_metrics(
                conn,
                row.model_id,
                v.id,
                metrics=metrics,
                previous=previous,
                actor=default_author(),
                at=time.time(),
                reason=reason,
            )
            return self.meta.load_version(conn, v.id)

    def committed_metrics(self, ref: str) -> dict[str, Any]:
        """The metrics as committed (part of the id)."""
        with self.meta.read() as conn:
            v = self.resolve(ref, conn)
            return (
                conn.execute(
                    sa.select(s.versions.c.metrics).where(s.versions.c.id == v.id)
                ).scalar()
                or {}
            )

    def metric_history(self, ref: str) -> list[MetricEvent]:
        """Metrics added to a version after its commit, oldest first."""
        e = s.metric_events.c
        with self.meta.read() as conn:
            v = self.resolve(ref, conn)
            rows = conn.execute(
                sa.select(s.metric_events).where(e.version_id == v.id).order_by(e.id)
            ).all()
        return [
            MetricEvent(v.ref, v.id, r.metrics, r.previous, r.actor, r.at, r.reason) for r in rows
        ]
