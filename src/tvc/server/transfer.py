"""The registry's own API under ``/api/v1``: tokens, versions, refs, history, and the object
transfer that :class:`tvc.remote.transport.HttpTransport` calls. The receiving side is
:mod:`tvc.remote.objects` and :mod:`tvc.remote.record`, the very code a path remote runs."""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tvc import errors
from tvc.remote import history, objects, record
from tvc.remote.transport import info_json, rows_json
from tvc.server.app import API, Ids, RecordRequest, Server, TokenRequest, _unlink
from tvc.server.tokens import Token


def install(app: FastAPI, server: Server) -> None:
    # -- tokens (admin) -------------------------------------------------------------------
    @app.get(f"{API}/tokens", **server.scoped("admin"))
    def token_list(token: Token = Depends(server.need("admin"))) -> dict[str, Any]:
        return {"tokens": [t.public() for t in server.tokens.list()]}

    @app.post(f"{API}/tokens", **server.scoped("admin"))
    def token_create(
        body: TokenRequest, token: Token = Depends(server.need("admin"))
    ) -> dict[str, Any]:
        secret = server.tokens.create(body.name, body.scope, body.models, body.expires)
        return {"name": body.name, "scope": body.scope, "token": secret}

    @app.delete(f"{API}/tokens/{{name}}", **server.scoped("admin"))
    def token_revoke(name: str, token: Token = Depends(server.need("admin"))) -> dict[str, Any]:
        server.tokens.revoke(name)
        return {"revoked": name}

    # -- who and what --------------------------------------------------------------------
    @app.get(f"{API}/whoami", **server.scoped("read"))
    def whoami(token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        return token.public()

    @app.get(f"{API}/models", **server.scoped("read"))
    def models(token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        return {"models": [m for m in server.reg.models() if token.may_read(m["model"])]}

    @app.get(f"{API}/versions/{{ref:path}}", **server.scoped("read"))
    def show(ref: str, token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        server.readable(token, ref.split("@", 1)[0])
        return server.reg.show(ref).to_json()

    @app.get(f"{API}/refs", **server.scoped("read"))
    def refs(
        model: list[str] | None = Query(None), token: Token = Depends(server.need("read"))
    ) -> dict[str, Any]:
        rows = record.list_refs(server.reg, model)
        return {"refs": [r for r in rows if token.may_read(r["model"])]}

    @app.get(f"{API}/history", **server.scoped("read"))
    def history_(model: str, token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        server.readable(token, model)
        return {"events": history.collect(server.reg, model)}

    # -- versions ------------------------------------------------------------------------
    @app.post(f"{API}/versions/recorded", **server.scoped("read"))
    def recorded(body: Ids, token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        mine = server.readable_versions(token, body.ids)
        return {"recorded": [v for v in body.ids if v in mine]}

    @app.post(f"{API}/versions/info", **server.scoped("read"))
    def info(body: Ids, token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        return {"versions": server.readable_versions(token, body.ids)}

    @app.post(f"{API}/versions/ancestry", **server.scoped("read"))
    def ancestry(body: Ids, token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        server.all_readable(token, body.ids)
        chain = record.ancestry(server.reg, body.ids)
        mine = server.readable_versions(token, chain)
        return {"versions": [v for v in chain if v in mine]}

    @app.post(f"{API}/versions/objects", **server.scoped("read"))
    def version_objects(body: Ids, token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        server.all_readable(token, body.ids)
        return {"objects": rows_json(server.reg, body.ids)}

    # -- objects -------------------------------------------------------------------------
    @app.post(f"{API}/objects/missing", **server.scoped("write"))
    def missing(body: Ids, token: Token = Depends(server.need("write"))) -> dict[str, Any]:
        absent = objects.missing(server.reg.engine, body.ids)
        allowed = server.allowed(token)
        if allowed is not None:  # no oracle for other models' objects: those count as missing
            gone = set(absent)
            absent = [i for i in body.ids if i in gone or i not in allowed]
        return {"missing": absent}

    @app.post(f"{API}/objects/info", **server.scoped("read"))
    def object_info(body: Ids, token: Token = Depends(server.need("read"))) -> dict[str, Any]:
        ids = objects.check_ids(body.ids)
        server.visible_objects(token, ids)
        return {"objects": info_json(server.reg, ids)}

    @app.post(
        f"{API}/objects/pack",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
        **server.scoped("read"),
    )
    def pack(body: Ids, token: Token = Depends(server.need("read"))):
        ids = objects.check_ids(body.ids)
        server.visible_objects(token, ids)
        name, path, _size = objects.write_pack(server.reg, ids, server.staging)
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"X-Tvc-Pack": name},
            background=BackgroundTask(_unlink, path),
        )

    @app.put(f"{API}/packs/{{name}}", **server.scoped("write"))
    async def put_pack(
        name: str,
        request: Request,
        token: Token = Depends(server.need("write")),
        x_tvc_lease: str | None = Header(None),
    ) -> dict[str, Any]:
        objects.check_pack_name(name)
        fd, tmp = objects.temp_file(server.staging)
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
        got = await run_in_threadpool(
            objects.receive_pack, server.reg, tmp, name, lease=x_tvc_lease
        )
        return {"name": got.name, "objects": got.objects, "new": got.new, "bytes": got.bytes}

    @app.post(f"{API}/uploads", **server.scoped("write"))
    def take_lease(token: Token = Depends(server.need("write"))) -> dict[str, Any]:
        return {"lease": objects.take_lease(server.reg, f"push by {token.name}")}

    @app.delete(f"{API}/uploads/{{lease}}", **server.scoped("write"))
    def drop_lease(lease: str, token: Token = Depends(server.need("write"))) -> dict[str, Any]:
        objects.drop_lease(server.reg, lease)
        return {"dropped": lease}

    @app.post(f"{API}/record", **server.scoped("write"))
    def record_(
        body: RecordRequest, token: Token = Depends(server.need("write"))
    ) -> dict[str, Any]:
        server.readable(token, body.model)
        got = record.record_versions(
            server.reg,
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
