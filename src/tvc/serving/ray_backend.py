"""``tvc serve … --ray [--replicas N]``: the same OIP app as a Ray Serve deployment.

Each replica builds the very :class:`~tvc.serving.service.Service` and app ``tvc serve`` runs
(from the spec: where the registry is, the model, its refs and flavor) and follows the alias
itself, so an alias move is picked up by every replica within a poll, each loading the new
version beside the old one and swapping in place — no replica restarts, no request fails. The
swap is per replica, not global (Ray Serve has no cluster-wide atomic switch): for a moment
two replicas may answer from different versions; a client that must not see that pins
``/v2/models/{m}/versions/{v}/infer``. A replica hands each request to the app in-process
(an ASGI call through httpx, no socket).

The cluster is ``RAY_ADDRESS`` when set (e.g. ``127.0.0.1:6379``), else a local one that this
process starts. Ray needs the ``ray`` extra: ``pip install 'tvc[ray]'``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from tvc.errors import UsageError


def build_service(spec: dict[str, Any]):
    """A started Service from a picklable spec (what a replica receives)."""
    from pathlib import Path

    from tvc.serving.service import Service
    from tvc.serving.source import LocalSource, open_source

    cache = Path(spec["cache"])
    if spec.get("url"):
        source, model, _ref = open_source(spec["url"], cache, spec.get("token"))
    else:
        from tvc.api import Registry

        model = spec["model"]
        source = LocalSource(Registry(spec["registry"]), model, cache)
    service = Service(
        source,
        model,
        [tuple(r) for r in spec["refs"]],
        name=spec.get("name"),
        flavor=spec.get("flavor", "auto"),
        trust_pickle=spec.get("trust_pickle", False),
        poll=spec.get("poll", 0.25),
    )
    service.start()
    return service


class Replica:
    """The body of the Ray Serve deployment (wrapped by :func:`deployment`)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import httpx

        from tvc.serving.app import create_app

        self.service = build_service(spec)
        app = create_app(self.service, max_bytes=spec.get("max_bytes", 64 << 20))
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://replica", timeout=None
        )

    async def __call__(self, request):
        from starlette.responses import Response

        body = await request.body()
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length")
        ]
        r = await self.client.request(
            request.method,
            request.url.path,
            params=request.query_params,
            headers=headers,
            content=body,
        )
        keep = {k: v for k, v in r.headers.items() if k.lower() != "content-length"}
        return Response(r.content, status_code=r.status_code, headers=keep)


def deployment(replicas: int, num_cpus: float = 0.5):
    try:
        from ray import serve
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray Serve: pip install 'tvc[ray]' ({exc})") from None
    return serve.deployment(
        name="tvc-serve",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
        graceful_shutdown_timeout_s=5,
    )(Replica)


def run_ray(spec: dict[str, Any], *, host: str, port: int, replicas: int) -> None:
    """Deploy on the cluster and block until SIGINT/SIGTERM; then delete the application."""
    if replicas < 1:
        raise UsageError("--replicas must be at least 1")
    import ray
    from ray import serve

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(log_to_driver=False, include_dashboard=False)
    app_name = f"tvc-{spec.get('name') or spec['model']}".replace("/", "-")
    try:
        serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
        serve.run(deployment(replicas).bind(spec), name=app_name, route_prefix="/", blocking=False)
        sys.stderr.write(
            f"tvc serve: {spec['model']} on Ray Serve, {replicas} replica(s), "
            f"http://{host}:{port}\n"
        )
        sys.stderr.flush()
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
    finally:
        try:
            serve.delete(app_name)
            # Serve keeps its proxy (and the port it was started with) while it lives: with no
            # application left, stop it, or the next `tvc serve --ray --port P` would not get P
            if not serve.status().applications:
                serve.shutdown()
        finally:
            ray.shutdown()
