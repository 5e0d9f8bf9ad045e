"""The registry's commands over HTTP, for a client that uses the server directly (SVN mode,
:mod:`tvc.remote.client`): aliases, rollback, lifecycle, metrics added later, branches and tags,
deletion, search, the audit log and stats.

Each route calls the very ``ModelRegistry`` method the CLI calls on a local registry — gates,
lifecycle rules, compare-and-swap and the audit all run here, on the server's registry, with its
config — inside ``acting_as(token.name)``, so every change is recorded as the token's. A model
the token may not read is unknown (404) here too, and search results, the audit log and stats
hold only models the token may read.

Scopes: reading is ``read``; moving refs, states and metrics is ``write``; deleting a version or
a model (``tvc rm``: irreversible once gc ran) is ``admin``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, Field

from tvc.repo import names
from tvc.repo.meta import acting_as
from tvc.server.app import API, Server
from tvc.server.tokens import Token

MAX_TEXT = 10_000


class AliasRequest(BaseModel):
    model: str
    alias: str
    ref: str | None = None  # set: the target; rollback: --to (None: the previous target)
    reason: str = Field("", max_length=MAX_TEXT)
    force: bool = False


class StateRequest(BaseModel):
    ref: str
    state: str
    reason: str = Field("", max_length=MAX_TEXT)
    force: bool = False


class MetricsRequest(BaseModel):
    ref: str
    metrics: dict[str, Any] = Field(default_factory=dict, max_length=1000)
    reason: str = Field("", max_length=MAX_TEXT)


class RefRequest(BaseModel):
    model: str
    kind: str = Field(pattern="^(branch|tag)$")
    name: str
    ref: str | None = None  # where a new branch or tag points (default: the head of main)


class RemoveRequest(BaseModel):
    target: str  # MODEL@REF: one version; MODEL: the whole model
    reason: str = Field("", max_length=MAX_TEXT)
    force: bool = False


def _state_digest(reg, token: Token) -> str:
    import hashlib
    import json

    import sqlalchemy as sa

    from tvc.repo import schema as s

    mo = s.models.c
    with reg.meta.read() as conn:
        rows = conn.execute(sa.select(mo.id, mo.name).where(mo.deleted.is_(None))).all()
        mids = sorted(mid for mid, name in rows if token.may_read(name))
        parts: list[Any] = [sorted(name for mid, name in rows if mid in set(mids))]
        v = s.versions.c
        parts.append(
            conn.execute(
                sa.select(sa.func.count(), sa.func.count(v.deleted), sa.func.max(v.number)).where(
                    v.model_id.in_(mids)
                )
            ).one()
        )
        r = s.refs.c
        parts.append(
            conn.execute(
                sa.select(r.model_id, r.kind, r.name, r.version_id)
                .where(r.model_id.in_(mids))
                .order_by(r.model_id, r.kind, r.name)
            ).all()
        )
        for table in (s.ref_events, s.state_events, s.metric_events):
            c = table.c
            parts.append(
                conn.execute(
                    sa.select(sa.func.count(), sa.func.max(c.id)).where(c.model_id.in_(mids))
                ).one()
            )
    text = json.dumps(parts, default=list)  # rows as lists
    return hashlib.sha256(text.encode()).hexdigest()


def _model_of(ref: str) -> str:
    return names.parse_ref(ref).model


def install(app: FastAPI, server: Server) -> None:
    reg = server.reg

    # -- reads ---------------------------------------------------------------------------
    @app.get(f"{API}/state", **server.scoped("read"))
    def state(token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        """A digest of everything a client's cache mirrors for this token — the models it may
        read, their refs, versions, deletions and events — so a client learns in one request
        that nothing changed since it last looked (it changes with any of them)."""
        return {"state": _state_digest(reg, token)}

    @app.get(f"{API}/lifecycle", **server.scoped("read"))
    def lifecycle(token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        """The server's lifecycle and gates, as its config.toml has them."""
        return {
            "lifecycle": reg.config.get("lifecycle") or {},
            "gates": reg.config.get("gates") or {},
        }

    @app.get(f"{API}/search", **server.scoped("read"))
    def search(
        q: str = Query("", max_length=MAX_TEXT),
        model: str | None = None,
        order_by: list[str] | None = Query(None),
        limit: int | None = Query(None, ge=0),
        token: Token = Depends(server.need("read")),
    ) -> dict[str, Any]:
        """Version ids matching the query, in order; the limit applies after the filter."""
        if model is not None:
            server.readable(token, model)
        found = reg.search(q, model=model, order_by=order_by, limit=None if token.models else limit)
        ids = [v.id for v in found if token.may_read(v.model)]
        return {"ids": ids[:limit] if limit else ids}

    @app.get(f"{API}/audit", **server.scoped("read"))
    def audit(
        model: str | None = None,
        limit: int | None = Query(None, ge=0),
        token: Token = Depends(server.need("read")),
    ) -> dict[str, Any]:
        if model is not None:
            server.readable(token, model)
        if not token.models:
            return {"events": reg.audit(model, limit)}
        # a token of some models: those it may read, then the log filtered and cut in SQL
        mine = sorted({m for m, *_rest in reg.audit_facets(model) if token.may_read(m)})
        return {"events": reg.audit(model, limit, models=mine)}

    @app.get(f"{API}/stats", **server.scoped("read"))
    def stats(token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        """Store-wide numbers; a token of some models only sees those models and their sums
        (the store's own totals would tell it about the others)."""
        st = reg.stats()
        if not token.models:
            return st
        mine = {k: m for k, m in st["models"].items() if token.may_read(k)}
        total = {
            k: sum(m[k] for m in mine.values())
            for k in ("versions", "logical_bytes", "unique_bytes", "stored_bytes")
        }
        saved = {
            k: sum(m["saved"][k] for m in mine.values()) for k in ("dedup", "compression", "delta")
        }
        logical = total["logical_bytes"]
        return {
            **st,
            "models": mine,
            **total,
            "saved": saved,
            "files": None,
            "chunks": None,
            "packs": None,
            "pack_bytes": total["stored_bytes"],
            "ratio": total["stored_bytes"] / logical if logical else None,
        }

    # -- writes: the registry's own methods, as the token ---------------------------------
    @app.post(f"{API}/aliases/set", **server.scoped("write"))
    def alias_set(body: AliasRequest, token: Token = Depends(server.need("write"))) -> dict:
        server.readable(token, body.model)
        if body.ref is None:
            from tvc.errors import UsageError

            raise UsageError("alias set needs a ref")
        with acting_as(token.name):
            e = reg.set_alias(
                body.model, body.alias, body.ref, reason=body.reason, force=body.force
            )
        return {"event": e.to_json() if e else None}

    @app.post(f"{API}/aliases/remove", **server.scoped("write"))
    def alias_remove(body: AliasRequest, token: Token = Depends(server.need("write"))) -> dict:
        server.readable(token, body.model)
        with acting_as(token.name):
            e = reg.remove_alias(body.model, body.alias, reason=body.reason)
        return {"event": e.to_json()}

    @app.post(f"{API}/aliases/rollback", **server.scoped("write"))
    def alias_rollback(body: AliasRequest, token: Token = Depends(server.need("write"))) -> dict:
        server.readable(token, body.model)
        with acting_as(token.name):
            e = reg.rollback(
                body.model, body.alias, to=body.ref, reason=body.reason, force=body.force
            )
        return {"event": e.to_json()}

    @app.post(f"{API}/lifecycle/set", **server.scoped("write"))
    def state_set(body: StateRequest, token: Token = Depends(server.need("write"))) -> dict:
        server.readable(token, _model_of(body.ref))
        with acting_as(token.name):
            e = reg.set_state(body.ref, body.state, reason=body.reason, force=body.force)
        return {"event": e.to_json() if e else None}

    @app.post(f"{API}/metrics/add", **server.scoped("write"))
    def metrics_add(body: MetricsRequest, token: Token = Depends(server.need("write"))) -> dict:
        server.readable(token, _model_of(body.ref))
        with acting_as(token.name):
            v = reg.add_metrics(body.ref, body.metrics, reason=body.reason)
        return {"id": v.id, "ref": v.ref}

    @app.post(f"{API}/refs/create", **server.scoped("write"))
    def ref_create(body: RefRequest, token: Token = Depends(server.need("write"))) -> dict:
        server.readable(token, body.model)
        with acting_as(token.name):
            make = reg.branch if body.kind == "branch" else reg.tag
            v = make(body.model, body.name, body.ref)
        return {"id": v.id, "ref": v.ref}

    @app.post(f"{API}/refs/delete", **server.scoped("write"))
    def ref_delete(body: RefRequest, token: Token = Depends(server.need("write"))) -> dict:
        server.readable(token, body.model)
        with acting_as(token.name):
            drop = reg.delete_branch if body.kind == "branch" else reg.delete_tag
            drop(body.model, body.name)
        return {"deleted": body.name}

    @app.post(f"{API}/rm", **server.scoped("admin"))
    def remove(body: RemoveRequest, token: Token = Depends(server.need("admin"))) -> dict:
        server.readable(token, _model_of(body.target))
        with acting_as(token.name):
            if "@" in body.target or "~" in body.target:
                gone = reg.rm(body.target, force=body.force, reason=body.reason)
            else:
                names.check_model_name(body.target)
                gone = reg.rm_model(body.target, force=body.force, reason=body.reason)
        return {"deleted": [v.ref for v in gone], "ids": [v.id for v in gone]}
