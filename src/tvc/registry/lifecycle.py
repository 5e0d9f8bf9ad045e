"""Lifecycle states of versions, their transitions, gates, and the append-only audit log.

Vocabulary
- *state*: where a version is in its life; a new version starts in the first state.
- *transition*: a move from one state to another that the lifecycle allows.
- *gate*: a query (``tvc.registry.query``) that a version must satisfy to enter a state, or to
  become the target of an alias, of the gate's name.
- *override*: a transition or alias move made with ``force`` despite an illegal transition or a
  failed gate; it is allowed and recorded as forced, with what it overrode.

The default machine (DESIGN.md): ``created → training → trained → evaluated → staged →
production → archived``, one forward step at a time, and any state → ``archived``. A registry
changes it in ``.tvc/config.toml``::

    [lifecycle]
    states = ["created", "candidate", "production", "archived"]   # the first is the initial one

    [lifecycle.transitions]          # optional; default: each state → the next, any → archived
    created = ["candidate", "archived"]
    candidate = ["production", "created", "archived"]
    production = ["archived"]

    [gates]                          # a string, or a list of strings that must all hold
    production = "metrics.accuracy >= 0.9 and params.lr < 0.01"
    staged = ["metrics.accuracy >= 0.8", "state = evaluated"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tvc.errors import ConflictError, UsageError
from tvc.repo import names
from tvc.repo import schema as s
from tvc.repo.meta import default_author
from tvc.repo.version import Version, iso

if TYPE_CHECKING:  # the query language loads when a gate is parsed (6 ms a command)
    from tvc.registry import query

DEFAULT_STATES = ("created", "training", "trained", "evaluated", "staged", "production", "archived")
ARCHIVED = "archived"


def _default_transitions(states: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for i, st in enumerate(states):
        nxt = [states[i + 1]] if i + 1 < len(states) else []
        if ARCHIVED in states and st != ARCHIVED and ARCHIVED not in nxt:
            nxt.append(ARCHIVED)
        out[st] = tuple(nxt)
    return out


@dataclass(frozen=True)
class Lifecycle:
    """The state machine and the gates of one registry (from its config.toml)."""

    states: tuple[str, ...] = DEFAULT_STATES
    transitions: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: _default_transitions(DEFAULT_STATES)
    )
    gates: Mapping[str, tuple[query.Query, ...]] = field(default_factory=dict)

    @property
    def initial(self) -> str:
        return self.states[0]

    def allowed(self, state: str) -> tuple[str, ...]:
        """The states ``state`` may move to without --force."""
        return tuple(self.transitions.get(state, ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "states": list(self.states),
            "initial": self.initial,
            "transitions": {k: list(v) for k, v in self.transitions.items()},
            "gates": {k: [q.text for q in v] for k, v in self.gates.items()},
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Lifecycle:
        """Read and validate ``[lifecycle]`` and ``[gates]``; any mistake is a UsageError that
        names the config key."""
        section = config.get("lifecycle") or {}
        if not isinstance(section, Mapping):
            raise UsageError("config.toml: [lifecycle] must be a table")
        raw_states = section.get("states", DEFAULT_STATES)
        if (
            not isinstance(raw_states, list | tuple)
            or not raw_states
            or not all(isinstance(x, str) for x in raw_states)
        ):
            raise UsageError("config.toml: lifecycle.states must be a non-empty list of names")
        states = tuple(raw_states)
        for st in states:
            if not names.REF_NAME_RE.match(st) or len(st) > 32:
                raise UsageError(f"config.toml: lifecycle state {st!r} is not a valid name")
        if len(set(states)) != len(states):
            raise UsageError("config.toml: lifecycle.states lists a state twice")
        raw_tr = section.get("transitions")
        if raw_tr is None:
            transitions = _default_transitions(states)
        else:
            if not isinstance(raw_tr, Mapping):
                raise UsageError("config.toml: [lifecycle.transitions] must be a table")
            transitions = {st: () for st in states}  # a state not listed is final
            for src, dsts in raw_tr.items():
                if src not in states:
                    raise UsageError(f"config.toml: lifecycle.transitions: unknown state {src!r}")
                if isinstance(dsts, str):
                    dsts = [dsts]
                if not isinstance(dsts, list | tuple):
                    raise UsageError(f"config.toml: lifecycle.transitions.{src}: expected a list")
                for d in dsts:
                    if d not in states:
                        raise UsageError(
                            f"config.toml: lifecycle.transitions.{src}: unknown state {d!r} "
                            f"(states: {', '.join(states)})"
                        )
                transitions[src] = tuple(dsts)
        raw_gates = config.get("gates") or {}
        if not isinstance(raw_gates, Mapping):
            raise UsageError("config.toml: [gates] must be a table")
        gates: dict[str, tuple[query.Query, ...]] = {}
        if raw_gates:
            from tvc.registry import query
        for name, exprs in raw_gates.items():
            if isinstance(exprs, str):
                exprs = [exprs]
            if not isinstance(exprs, list | tuple) or not all(isinstance(e, str) for e in exprs):
                raise UsageError(f"config.toml: gates.{name}: expected a query or a list of them")
            parsed = []
            for e in exprs:
                q = query.parse(e, source=f"config.toml gates.{name}")
                q.check_states(states)
                parsed.append(q)
            gates[name] = tuple(parsed)
        return cls(states, transitions, gates)


@dataclass(frozen=True)
class StateEvent:
    """One entry of the lifecycle audit log."""

    ref: str
    id: str
    old: str
    new: str
    actor: str
    at: float
    reason: str
    forced: bool
    overridden: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "id": self.id,
            "from": self.old,
            "to": self.new,
            "actor": self.actor,
            "at": iso(self.at),
            "reason": self.reason,
            "forced": self.forced,
            "overridden": self.overridden,
        }


@dataclass(frozen=True)
class GateFailure:
    gate: str  # the state or alias name
    query: query.Query
    values: dict[str, Any]

    def __str__(self) -> str:
        from tvc.registry import query

        shown = ", ".join(
            f"{k} = {v!r}" if v is not query._MISSING else f"{k} is missing"
            for k, v in self.values.items()
        )
        return f"{self.query.text} ({shown})" if shown else self.query.text


class LifecycleMixin:
    """``set_state``, ``state_history``, ``lifecycle`` and gate checks for ModelRegistry."""

    def lifecycle(self) -> Lifecycle:
        """The registry's state machine and all its gates (config.toml, else the default)."""
        return Lifecycle.from_config(self.config)

    def lifecycle_machine(self) -> Lifecycle:
        """The state machine without the gates. Commit, search and transitions use it (and
        parse only the gate they need), so a mistake in one gate stops only the moves that
        gate guards — with an error that names it."""
        return Lifecycle.from_config({"lifecycle": self.config.get("lifecycle") or {}})

    def _gate_queries(self, name: str, states: tuple[str, ...]) -> tuple[query.Query, ...]:
        gates = self.config.get("gates") or {}
        if not isinstance(gates, Mapping):
            raise UsageError("config.toml: [gates] must be a table")
        if name not in gates:
            return ()
        one = {"lifecycle": {"states": list(states)}, "gates": {name: gates[name]}}
        return Lifecycle.from_config(one).gates[name]

    # -- gates -------------------------------------------------------------------------
    def _gate_record(self, conn: sa.Connection, v: Version) -> dict[str, Any]:
        """A version as the query evaluator sees it (refs included)."""
        r = s.refs.c
        refs = conn.execute(sa.select(r.kind, r.name).where(r.version_id == v.id)).all()
        return {
            "model": v.model,
            "version": v.number,
            "state": v.state,
            "created": v.created,
            "author": v.author,
            "id": v.id,
            "params": v.params,
            "metrics": v.metrics,
            "tags": {n for k, n in refs if k == "tag"},
            "alias": {n for k, n in refs if k == "alias"},
        }

    def _gate_failures(self, conn: sa.Connection, gate: str, v: Version) -> list[GateFailure]:
        states = self.lifecycle_machine().states
        queries = self._gate_queries(gate, states)
        if not queries:
            return []
        record = self._gate_record(conn, v)
        return [
            GateFailure(gate, q, q.values(record)) for q in queries if not q.matches(record, states)
        ]

    def check_gate(self, gate: str, ref: str) -> list[GateFailure]:
        """The gates named ``gate`` that ``ref`` fails (empty: it passes, or no such gate)."""
        with self.meta.read() as conn:
            return self._gate_failures(conn, gate, self.resolve(ref, conn))

    @staticmethod
    def _gate_message(what: str, v: Version, failures: list[GateFailure]) -> str:
        detail = "; ".join(str(f) for f in failures)
        return f"gate {failures[0].gate!r} refuses {v.ref} for {what}: {detail} (--force overrides)"

    # -- transitions -------------------------------------------------------------------
    def set_state(
        self, ref: str, state: str, *, reason: str = "", force: bool = False
    ) -> StateEvent | None:
        """Move a version to ``state``; returns the audit entry (None when already there).

        Refuses a transition the lifecycle does not allow (naming the legal ones) or one whose
        gate fails (naming the query and the actual values), both with ConflictError, unless
        ``force`` — then it is made, and recorded as forced with what it overrode.
        """
        lc = self.lifecycle_machine()
        if state not in lc.states:
            raise UsageError(f"unknown state {state!r} (states: {', '.join(lc.states)})")
        with self.meta.write() as conn:
            mid = self.meta.lock_model_of(conn, ref)
            v = self.resolve(ref, conn)
            if v.state == state:
                return None
            overridden = []
            allowed = lc.allowed(v.state)
            if state not in allowed:
                legal = ", ".join(allowed) or "none"
                if v.state not in lc.states:
                    legal = f"none: {v.state!r} is not a state of this lifecycle"
                msg = (
                    f"{v.ref} is {v.state}: {v.state} → {state} is not allowed "
                    f"(legal next states: {legal}; --force overrides)"
                )
                if not force:
                    raise ConflictError(msg)
                overridden.append(f"illegal transition {v.state} → {state}")
            failures = self._gate_failures(conn, state, v)
            if failures:
                if not force:
                    raise ConflictError(self._gate_message(f"state {state}", v, failures))
                overridden.append(f"gate {state}: " + "; ".join(str(f) for f in failures))
            event = StateEvent(
                ref=v.ref,
                id=v.id,
                old=v.state,
                new=state,
                actor=default_author(),
                at=time.time(),
                reason=reason,
                forced=bool(overridden),
                overridden="; ".join(overridden) or None,
            )
            vc = s.versions.c
            conn.execute(s.versions.update().where(vc.id == v.id).values(state=state))
            self.meta.record_state(
                conn,
                mid,
                v.id,
                old_state=event.old,
                new_state=event.new,
                actor=event.actor,
                at=event.at,
                reason=event.reason,
                forced=event.forced,
                overridden=event.overridden,
            )
            return event

    def state_history(self, target: str) -> list[StateEvent]:
        """Transitions, oldest first, of one version (``MODEL@REF``) or of every version of a
        model (``MODEL``)."""
        e, v, mo = s.state_events.c, s.versions.c, s.models.c
        q = (
            sa.select(s.state_events, v.number, mo.name)
            .join_from(s.state_events, s.versions, e.version_id == v.id)
            .join(s.models, e.model_id == mo.id)
            .order_by(e.id)
        )
        with self.meta.read() as conn:
            if "@" in target or "~" in target:
                version = self.resolve(target, conn)
                q = q.where(e.version_id == version.id)
            else:
                q = q.where(e.model_id == self.meta.model_id(conn, target))
            rows = conn.execute(q).all()
        return [
            StateEvent(
                ref=f"{row.name}@v{row.number}",
                id=row.version_id,
                old=row.old_state,
                new=row.new_state,
                actor=row.actor,
                at=row.at,
                reason=row.reason,
                forced=row.forced,
                overridden=row.overridden,
            )
            for row in rows
        ]
