"""``tvc server``: a registry over HTTP (FastAPI), running the same registry code as the CLI.

Every endpoint but the spec itself needs a token (``Authorization: Bearer …``, see
:mod:`tvc.server.tokens`) whose scope is at least the one the endpoint declares in the spec
(``x-tvc-scope``): missing, wrong, expired or revoked → 401, a scope too small → 403. A model
the token may not read is invisible: asking for it, for one of its versions, or for an object
that only its versions use answers 404, as for something that does not exist. Errors are JSON
``{"error": message, "exit_code": n}`` with tvc's exit code, so a client raises the same error
class the CLI would.

The transfer endpoints are those :class:`tvc.remote.transport.HttpTransport` calls; the
receiving side is :mod:`tvc.remote.objects` and :mod:`tvc.remote.record`, the very code a path
remote runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tvc import errors
from tvc.api import Registry
from tvc.remote import history, objects, record
from tvc.remote.transport import info_json, rows_json
from tvc.server.tokens import Token, TokenStore

API = "/api/v1"
MAX_IDS = 20000

STATUS = [  # most specific first
    (errors.AccessError, 401),
    (errors.RefError, 404),
    (errors.UsageError, 400),
    (errors.ExistsError, 409),
    (errors.ConflictError, 409),
    (errors.FormatError, 422),
    (errors.IntegrityError, 422),
    (errors.LockTimeoutError, 503),
    (errors.StorageError, 503),
]


class Forbidden(errors.AccessError):
    """The token is valid but its scope is too small (HTTP 403)."""


class Ids(BaseModel):
    ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)


class RecordRequest(BaseModel):
    model: str
    versions: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    numbers: dict[str, int] = Field(default_factory=dict)
    moves: list[tuple[str, str | None, str]] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list, max_length=100_000)
    force: bool = False


class TokenRequest(BaseModel):
    name: str
    scope: str = "read"
    models: list[str] = Field(default_factory=list, max_length=100)
    expires: str | None = None


def create_app(data: str | os.PathLike[str]) -> FastAPI:
    reg = Registry(data)
    tokens = TokenStore(reg.dir)
    staging = reg.dir / "tmp"
    app = FastAPI(
        title="tvc server",
        version="1",
        description="A tvc registry: versions, objects and refs over HTTP.",
    )
    app.state.registry = reg

    @app.exception_handler(errors.TvcError)
    async def _tvc_error(_request: Request, exc: errors.TvcError) -> JSONResponse:
        status = 403 if isinstance(exc, Forbidden) else 500
        if status == 500:
            status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
        return JSONResponse(
            {"error": exc.message, "exit_code": exc.exit_code},
            status_code=status,
            headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
        )

    def need(scope: str):
        def check(authorization: str | None = Header(None)) -> Token:
            secret = None
            if authorization and authorization.lower().startswith("bearer "):
                secret = authorization[7:].strip()
            token = tokens.authenticate(secret)
            if not token.allows(scope):
                raise Forbidden(f"token {token.name!r} has scope {token.scope}; this needs {scope}")
            return token

        return check

    def scoped(scope: str) -> dict[str, Any]:
        return {"openapi_extra": {"x-tvc-scope": scope}}

    def readable(token: Token, model: str) -> None:
        if not token.may_read(model):
            raise errors.UnknownRefError(f"unknown model {model!r}")

    def readable_versions(token: Token, vids: list[str]) -> dict[str, dict[str, Any]]:
        infos = record.version_infos(reg, objects.check_ids(vids))
        return {v: i for v, i in infos.items() if token.may_read(i["model"])}

    # -- tokens (admin) -------------------------------------------------------------------
    @app.get(f"{API}/tokens", **scoped("admin"))
    def token_list(token: Token = Depends(need("admin"))) -> dict[str, Any]:
        return {"tokens": [t.public() for t in tokens.list()]}

    @app.post(f"{API}/tokens", **scoped("admin"))
    def token_create(body: TokenRequest, token: Token = Depends(need("admin"))) -> dict[str, Any]:
        secret = tokens.create(body.name, body.scope, body.models, body.expires)
        return {"name": body.name, "scope": body.scope, "token": secret}

    @app.delete(f"{API}/tokens/{{name}}", **scoped("admin"))
    def token_revoke(name: str, token: Token = Depends(need("admin"))) -> dict[str, Any]:
        tokens.revoke(name)
        return {"revoked": name}

    # -- who and what --------------------------------------------------------------------
    @app.get(f"{API}/whoami", **scoped("read"))
    def whoami(token: Token = Depends(need("read"))) -> dict[str, Any]:
        return token.public()

    @app.get(f"{API}/models", **scoped("read"))
    def models(token: Token = Depends(need("read"))) -> dict[str, Any]:
        return {"models": [m for m in reg.models() if token.may_read(m["model"])]}

    @app.get(f"{API}/versions/{{ref:path}}", **scoped("read"))
    def show(ref: str, token: Token = Depends(need("read"))) -> dict[str, Any]:
        readable(token, ref.split("@", 1)[0])
        return reg.show(ref).to_json()

    @app.get(f"{API}/refs", **scoped("read"))
    def refs(
        model: list[str] | None = Query(None), token: Token = Depends(need("read"))
    ) -> dict[str, Any]:
        rows = record.list_refs(reg, model)
        return {"refs": [r for r in rows if token.may_read(r["model"])]}

    @app.get(f"{API}/history", **scoped("read"))
    def history_(model: str, token: Token = Depends(need("read"))) -> dict[str, Any]:
        readable(token, model)
        return {"events": history.collect(reg, model)}

    # -- versions ------------------------------------------------------------------------
    @app.post(f"{API}/versions/recorded", **scoped("read"))
    def recorded(body: Ids, token: Token = Depends(need("read"))) -> dict[str, Any]:
        mine = readable_versions(token, body.ids)
        return {"recorded": [v for v in body.ids if v in mine]}

    @app.post(f"{API}/versions/info", **scoped("read"))
    def info(body: Ids, token: Token = Depends(need("read"))) -> dict[str, Any]:
        return {"versions": readable_versions(token, body.ids)}

    def _all_readable(token: Token, vids: list[str]) -> None:
        mine = readable_versions(token, vids)
        for v in vids:
            if v not in mine:
                raise errors.UnknownRefError(f"no version {v}")

    @app.post(f"{API}/versions/ancestry", **scoped("read"))
    def ancestry(body: Ids, token: Token = Depends(need("read"))) -> dict[str, Any]:
        _all_readable(token, body.ids)
        chain = record.ancestry(reg, body.ids)
        mine = readable_versions(token, chain)
        return {"versions": [v for v in chain if v in mine]}

    @app.post(f"{API}/versions/objects", **scoped("read"))
    def version_objects(body: Ids, token: Token = Depends(need("read"))) -> dict[str, Any]:
        _all_readable(token, body.ids)
        return {"objects": rows_json(reg, body.ids)}

    # -- objects -------------------------------------------------------------------------
    @app.post(f"{API}/objects/missing", **scoped("write"))
    def missing(body: Ids, token: Token = Depends(need("write"))) -> dict[str, Any]:
        absent = objects.missing(reg.engine, body.ids)
        allowed = _allowed(token)
        if allowed is not None:  # no oracle for other models' objects: those count as missing
            gone = set(absent)
            absent = [i for i in body.ids if i in gone or i not in allowed]
        return {"missing": absent}

    visible_cache: dict[tuple, set[str]] = {}

    def _allowed(token: Token) -> set[str] | None:
        """Every object a version the token may read uses; None for a token of every model.
        Kept while the set of versions is the same (count and newest time)."""
        if not token.models:
            return None
        import sqlalchemy as sa

        from tvc.repo import schema as s

        v = s.versions.c
        with reg.meta.read() as conn:
            count, newest = conn.execute(
                sa.select(sa.func.count(), sa.func.max(v.created)).where(v.deleted.is_(None))
            ).one()
            vids = [r[0] for r in conn.execute(sa.select(v.id).where(v.deleted.is_(None)))]
        key = (tuple(token.models), count, newest)
        if key not in visible_cache:
            mine = [
                i
                for i, info in record.version_infos(reg, vids).items()
                if token.may_read(info["model"])
            ]
            visible_cache.clear()
            visible_cache[key] = set(rows_json(reg, mine))
        return visible_cache[key]

    def _visible_objects(token: Token, ids: list[str]) -> None:
        """404 for an object no version the token may read uses (or that is not here)."""
        allowed = _allowed(token)
        rows = objects.object_rows(reg.engine, ids)
        for i in ids:
            if i not in rows or (allowed is not None and i not in allowed):
                raise errors.UnknownRefError(f"no object {i}")

    @app.post(f"{API}/objects/info", **scoped("read"))
    def object_info(body: Ids, token: Token = Depends(need("read"))) -> dict[str, Any]:
        ids = objects.check_ids(body.ids)
        _visible_objects(token, ids)
        return {"objects": info_json(reg, ids)}

    @app.post(
        f"{API}/objects/pack",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
        **scoped("read"),
    )
    def pack(body: Ids, token: Token = Depends(need("read"))):
        ids = objects.check_ids(body.ids)
        _visible_objects(token, ids)
        name, path, _size = objects.write_pack(reg, ids, staging)
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"X-Tvc-Pack": name},
            background=BackgroundTask(_unlink, path),
        )

    @app.put(f"{API}/packs/{{name}}", **scoped("write"))
    async def put_pack(
        name: str,
        request: Request,
        token: Token = Depends(need("write")),
        x_tvc_lease: str | None = Header(None),
    ) -> dict[str, Any]:
        objects.check_pack_name(name)
        fd, tmp = objects.temp_file(staging)
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for block in request.stream():
                    size += len(block)
                    if size > objects.MAX_PACK_BYTES:
                        raise errors.IntegrityError("pack upload larger than a pack may be")
                    f.write(block)
        except BaseException:
            _unlink(tmp)
            raise
        got = await run_in_threadpool(objects.receive_pack, reg, tmp, name, lease=x_tvc_lease)
        return {"name": got.name, "objects": got.objects, "new": got.new, "bytes": got.bytes}

    @app.post(f"{API}/uploads", **scoped("write"))
    def take_lease(token: Token = Depends(need("write"))) -> dict[str, Any]:
        return {"lease": objects.take_lease(reg, f"push by {token.name}")}

    @app.delete(f"{API}/uploads/{{lease}}", **scoped("write"))
    def drop_lease(lease: str, token: Token = Depends(need("write"))) -> dict[str, Any]:
        objects.drop_lease(reg, lease)
        return {"dropped": lease}

    @app.post(f"{API}/record", **scoped("write"))
    def record_(body: RecordRequest, token: Token = Depends(need("write"))) -> dict[str, Any]:
        readable(token, body.model)
        got = record.record_versions(
            reg,
            body.model,
            objects.check_ids(body.versions),
            numbers=body.numbers,
            moves=[record.Move(*m) for m in body.moves],
            tags=body.tags,
            force=body.force,
            history=body.history,
            gates=True,
            actor=token.name,
        )
        return got.to_json()

    return app


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        Path(path).unlink()


def serve(data: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8470) -> None:
    """Run the server until interrupted (uvicorn, one process; access log off: it would
    record paths and addresses, and nothing in it is needed to audit who did what)."""
    import uvicorn

    app = create_app(data)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
