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

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tvc import errors
from tvc.api import Registry
from tvc.remote import objects, record
from tvc.remote.transport import rows_json
from tvc.server.tokens import Token, TokenStore

API = "/api/v1"
MAX_IDS = 20000

Forbidden = errors.ForbiddenError  # a valid token, a scope too small: HTTP 403


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


class Server:
    """What every route module of the server shares: the registry, the token store, the
    staging directory, and the access checks. Route modules (``transfer`` here, and the
    Hugging Face endpoint, the UI, … beside it) take one and add their routes with
    ``install(app, server)``, so each area lives in its own module and all apply one policy."""

    def __init__(self, data: str | os.PathLike[str]) -> None:
        self.reg = Registry(data)
        self.tokens = TokenStore(self.reg.engine, self.reg.dir)
        self.staging = self.reg.dir / "tmp"
        self._visible: dict[tuple, set[str]] = {}

    # -- access --------------------------------------------------------------------------
    def token(self, authorization: str | None) -> Token:
        """The token an ``Authorization: Bearer …`` header names (AccessError → 401)."""
        secret = None
        if authorization and authorization.lower().startswith("bearer "):
            secret = authorization[7:].strip()
        return self.tokens.authenticate(secret)

    def need(self, scope: str):
        """A FastAPI dependency: the request's token, at least of ``scope`` (else 401/403)."""

        def check(authorization: str | None = Header(None)) -> Token:
            token = self.token(authorization)
            if not token.allows(scope):
                raise Forbidden(f"token {token.name!r} has scope {token.scope}; this needs {scope}")
            return token

        return check

    @staticmethod
    def scoped(scope: str) -> dict[str, Any]:
        """Route keywords that declare the scope in the spec (the access tests read it)."""
        return {"openapi_extra": {"x-tvc-scope": scope}}

    @staticmethod
    def readable(token: Token, model: str) -> None:
        """A model the token may not read does not exist (404), as for any unknown model."""
        if not token.may_read(model):
            raise errors.UnknownRefError(f"unknown model {model!r}")

    def readable_versions(self, token: Token, vids: list[str]) -> dict[str, dict[str, Any]]:
        infos = record.version_infos(self.reg, objects.check_ids(vids))
        return {v: i for v, i in infos.items() if token.may_read(i["model"])}

    def all_readable(self, token: Token, vids: list[str]) -> None:
        mine = self.readable_versions(token, vids)
        for v in vids:
            if v not in mine:
                raise errors.UnknownRefError(f"no version {v}")

    def allowed(self, token: Token) -> set[str] | None:
        """Every object a version the token may read uses; None for a token of every model.
        Kept while the set of versions is the same (count and newest time)."""
        if not token.models:
            return None
        import sqlalchemy as sa

        from tvc.repo import schema as s

        v = s.versions.c
        with self.reg.meta.read() as conn:
            count, newest = conn.execute(
                sa.select(sa.func.count(), sa.func.max(v.created)).where(v.deleted.is_(None))
            ).one()
            vids = [r[0] for r in conn.execute(sa.select(v.id).where(v.deleted.is_(None)))]
        key = (tuple(token.models), count, newest)
        if key not in self._visible:
            mine = [
                i
                for i, info in record.version_infos(self.reg, vids).items()
                if token.may_read(info["model"])
            ]
            self._visible.clear()
            self._visible[key] = set(rows_json(self.reg, mine))
        return self._visible[key]

    def visible_objects(self, token: Token, ids: list[str]) -> None:
        """404 for an object no version the token may read uses (or that is not here)."""
        allowed = self.allowed(token)
        rows = objects.object_rows(self.reg.engine, ids)
        for i in ids:
            if i not in rows or (allowed is not None and i not in allowed):
                raise errors.UnknownRefError(f"no object {i}")


def error_response(exc: errors.TvcError) -> JSONResponse:
    """tvc's error as JSON with its exit code, under the HTTP status its class maps to."""
    status, body, headers = errors.http_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(data: str | os.PathLike[str]) -> FastAPI:
    server = Server(data)
    app = FastAPI(
        title="tvc server",
        version="1",
        description="A tvc registry: versions, objects and refs over HTTP.",
    )
    app.state.registry = server.reg
    app.state.server = server

    @app.exception_handler(errors.TvcError)
    async def _tvc_error(_request: Request, exc: errors.TvcError) -> JSONResponse:
        return error_response(exc)

    from tvc import ui
    from tvc.server import hf, registry_api, transfer

    for area in (transfer, registry_api, ui, hf):
        area.install(app, server)
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
