"""A malicious server against a clone, over real HTTP: a ``tvc server`` app whose pack answers
are tampered with on the way out (flipped bytes, a ``..`` or absolute pack name, a stream far
longer than any pack). The clone refuses each, and nothing of it is stored."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

import tvc
from server_helpers import free_port, token
from tvc.errors import IntegrityError
from tvc.server.app import create_app
from tvc.store import index

from repo_helpers import make_model_dir


def hostile_app(data: Path, how: str):
    app = create_app(data)

    @app.middleware("http")
    async def tamper(request: Request, call_next):
        resp = await call_next(request)
        if not request.url.path.endswith("/objects/pack") or resp.status_code != 200:
            return resp
        body = bytearray(b"".join([chunk async for chunk in resp.body_iterator]))
        name = resp.headers["X-Tvc-Pack"]
        if how == "flip":
            body[len(body) // 2] ^= 0xFF
        elif how in ("dotdot", "absolute"):
            name = ("../" if how == "dotdot" else "/etc/") + name
        elif how == "endless":

            def forever():
                yield bytes(body)
                for _ in range(200):  # 200 MiB more than the pack: past any pack's size
                    yield bytes(1 << 20)

            return StreamingResponse(forever(), headers={"X-Tvc-Pack": name})
        return Response(bytes(body), headers={"X-Tvc-Pack": name})

    return app


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("flip", "do not hash to its name"),
        ("dotdot", "invalid pack name"),
        ("absolute", "invalid pack name"),
        ("endless", "ran past"),
    ],
)
def test_a_hostile_server_is_refused_and_nothing_is_stored(tmp_path, how, says):
    src = tvc.Registry.init(tmp_path / "src")
    for i in range(2):
        make_model_dir(tmp_path / "out", seed=1, n_layers=3, width=64, changed=tuple(range(i)))
        src.commit("m", [tmp_path / "out"], f"v{i}", detect_code=False)
    src.close()
    secret = token(tmp_path / "src", "reader", "read")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(hostile_app(tmp_path / "src", how), port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):  # until it serves (bounded)
            if server.started:
                break
            thread.join(0.02)
        with pytest.raises(IntegrityError, match=says):
            tvc.Registry.clone(f"http://127.0.0.1:{port}", tmp_path / "c", token=secret)
    finally:
        server.should_exit = True
        thread.join()
    c = tvc.Registry(tmp_path / "c")
    with c.meta.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(index.chunks)).scalar() == 0
    assert c.models() == []
    assert not list((tmp_path / "c" / ".tvc" / "objects").rglob("*.pack"))
    assert not list((tmp_path / "c" / ".tvc" / "tmp").iterdir())
