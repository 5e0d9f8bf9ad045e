"""The web UI: models, versions, metric charts, the tensor diff, lineage and audit, with the
registry's actions (alias moves, rollback, lifecycle transitions, metrics) — server-rendered
pages under ``/ui/``.

Two ways to run it, one set of routes: :func:`install` adds it to ``tvc server`` (login with a
token, permissions of that token), :func:`create_app` serves a local registry for ``tvc ui``
(the local user, who may write). Everything the pages load — style, script — is served from
this package (``static/``); nothing comes from another host.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def install(app: FastAPI, server: Any) -> None:
    """The UI inside ``tvc server`` (a ``tvc.server.app.Server``: its registry, its token
    store and its ``scoped``): the server's tokens decide who sees and does what."""
    from tvc.ui.auth import Auth
    from tvc.ui.web import UI, routes

    def url(request) -> str:
        return str(request.base_url).rstrip("/")

    routes(
        app, UI(server.reg, Auth(server.tokens), server_url=url), server.scoped, root_redirect=True
    )


def create_app(path: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1") -> FastAPI:
    """``tvc ui``: the UI over the registry at ``path`` for the local user."""
    from fastapi import FastAPI

    from tvc import errors
    from tvc.api import Registry
    from tvc.repo.meta import default_author
    from tvc.ui.auth import LocalAuth
    from tvc.ui.web import UI, error_json, routes

    reg = Registry(path)
    app = FastAPI(title="tvc ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry = reg

    @app.exception_handler(errors.TvcError)
    async def _tvc_error(_request, exc: errors.TvcError):
        return error_json(exc)

    ui = UI(reg, LocalAuth(default_author(), hosts=(host,)), server_url=lambda _r: None)
    routes(app, ui, lambda _scope: {}, root_redirect=True)
    return app


def serve(path: str | os.PathLike[str] | None, host: str = "127.0.0.1", port: int = 8471) -> None:
    import uvicorn

    uvicorn.run(create_app(path, host=host), host=host, port=port, log_level="warning")
