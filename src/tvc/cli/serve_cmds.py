"""``tvc serve MODEL@REF``: a model as an Open Inference Protocol v2 service that follows its
alias; ``tvc serve status``: what running services serve."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from tvc.cli import common
from tvc.cli.common import JsonOpt
from tvc.errors import TvcError, UsageError


def register(app: typer.Typer) -> None:
    app.command("serve", context_settings={"allow_interspersed_args": True})(serve)


def _running_dir(cache: Path) -> Path:
    return cache / "running"


def serve(
    target: str = typer.Argument(
        ...,
        metavar="MODEL[@REF] | http(s)://HOST/MODEL@REF | status",
        help="What to serve (default ref: main); `status` shows the services running here.",
    ),
    url: str = typer.Argument(None, metavar="[URL]", help="status: ask this service only."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8480, "--port", help="Port to listen on (0: any free port)."),
    flavor: str = typer.Option(
        "auto", "--flavor", help="auto | sklearn | onnx | torch | transformers | python."
    ),
    split: str = typer.Option(
        None, "--split", help="Traffic split over refs of MODEL, e.g. production=90,canary=10."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Load scikit-learn pickles/joblib (after tvc's scan)."
    ),
    name: str = typer.Option(None, "--name", help="Model name in the OIP paths (default MODEL)."),
    poll: float = typer.Option(0.25, "--poll", help="Seconds between looks at the alias."),
    cache: str = typer.Option(None, "--cache", help="Checkout cache (default ~/.cache/tvc/serve)."),
    seed: list[str] = typer.Option(
        None, "--seed", help="Read-only checkout caches to look in first (KServe: /mnt/models)."
    ),
    max_request_bytes: int = typer.Option(
        64 << 20, "--max-request-bytes", help="Larger requests are refused unread (413)."
    ),
    token: str = typer.Option(None, "--token", envvar="TVC_TOKEN", help="Server registry token."),
    export: str = typer.Option(None, "--export", help="kserve: print KServe YAML, serve nothing."),
    image: str = typer.Option(
        "tvc:latest", "--image", help="--export kserve: the image that has tvc installed."
    ),
    ray: bool = typer.Option(False, "--ray", help="Run as a Ray Serve deployment (tvc[ray])."),
    replicas: int = typer.Option(1, "--replicas", help="--ray: number of replicas."),
    json_: bool = JsonOpt,
) -> None:
    """Serve a model version over the Open Inference Protocol v2, following its alias."""
    from tvc.serving.source import default_cache

    cache_dir = Path(cache) if cache else default_cache()
    if target == "status":
        _status(cache_dir, url, json_)
        return
    if url is not None:
        raise UsageError(f"unexpected argument {url!r}")
    if export is not None:
        _export(export, target, split, flavor, image, port)
        return
    if port < 0 or port > 65535:
        raise UsageError(f"--port {port}: not a port")
    seeds = tuple(Path(s) for s in seed or ())
    if ray:
        spec = _ray_spec(
            target, cache_dir, token, split, name, flavor, trust_pickle, poll, max_request_bytes
        )
        from tvc.serving.ray_backend import run_ray

        run_ray(spec, host=host, port=port, replicas=replicas)
        return
    service, source = _service(
        target, cache_dir, seeds, token, split, name, flavor, trust_pickle, poll
    )
    _log_to_stderr()
    try:
        service.start()
        _run(service, host, port, max_request_bytes, cache_dir)
    finally:
        service.stop()
        source.close()


def _service(target, cache_dir, seeds, token, split, name, flavor, trust_pickle, poll):
    from tvc.remote.transport import is_url
    from tvc.repo import names
    from tvc.serving.service import Service, parse_split
    from tvc.serving.source import LocalSource, open_source

    if is_url(target):
        if token is None:
            from tvc.remote.config import token_for
            from tvc.serving.source import split_url

            token = token_for(split_url(target)[0])
        source, model, ref = open_source(target, cache_dir, token, seeds)
    else:
        model, _, ref = target.partition("@")
        names.check_model_name(model)
        source = LocalSource(common.open_registry(), model, cache_dir, seeds)
        ref = ref or "main"
    if split:
        if "@" in target:
            raise UsageError("--split names the refs: give MODEL without @REF")
        refs = parse_split(split)
    else:
        refs = [(ref, 100)]
    service = Service(
        source, model, refs, name=name, flavor=flavor, trust_pickle=trust_pickle, poll=poll
    )
    return service, source


def _ray_spec(target, cache_dir, token, split, name, flavor, trust_pickle, poll, max_bytes) -> dict:
    """The spec each Ray replica builds its service from (checked here first: a bad ref or
    model fails now, not inside the cluster)."""
    service, source = _service(
        target, cache_dir, (), token, split, name, flavor, trust_pickle, poll
    )
    try:
        for slot in service.slots:
            source.target(slot.ref)
    finally:
        source.close()
    from tvc.remote.transport import is_url

    spec = dict(
        model=service.model,
        refs=[(s.ref, s.weight) for s in service.slots],
        name=service.name,
        flavor=flavor,
        trust_pickle=trust_pickle,
        poll=poll,
        cache=str(cache_dir.absolute()),
        max_bytes=max_bytes,
    )
    if is_url(target):
        spec.update(url=target, token=getattr(source, "token", None))
    else:
        spec.update(registry=str(source.reg.root))
    return spec


def _log_to_stderr() -> None:
    import logging

    log = logging.getLogger("tvc.serve")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tvc serve: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _run(service, host: str, port: int, max_bytes: int, cache_dir: Path) -> None:
    import socket

    import uvicorn

    from tvc.serving.app import create_app

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    url = f"http://{host}:{port}"
    running = _running_dir(cache_dir)
    running.mkdir(parents=True, exist_ok=True)
    marker = running / f"{os.getpid()}.json"
    marker.write_text(json.dumps({"url": url, "pid": os.getpid(), "model": service.model}))
    slots = ", ".join(
        f"{s.ref}={s.current.target.ref}" for s in service.slots if s.current is not None
    )
    sys.stderr.write(f"tvc serve: {service.name} ({slots}) on {url}\n")
    sys.stderr.flush()
    config = uvicorn.Config(
        create_app(service, max_bytes=max_bytes),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        marker.unlink(missing_ok=True)


def _status(cache_dir: Path, url: str | None, json_: bool) -> None:
    import httpx

    if url is not None:
        urls = [url.rstrip("/")]
    else:
        urls = []
        running = _running_dir(cache_dir)
        for f in sorted(running.glob("*.json")) if running.is_dir() else []:
            try:
                info = json.loads(f.read_text())
                os.kill(int(info["pid"]), 0)
            except (OSError, ValueError, KeyError):
                f.unlink(missing_ok=True)  # its process is gone
                continue
            urls.append(info["url"])
    found = []
    for u in urls:
        try:
            body = httpx.get(u + "/v2/tvc/status", timeout=5).json()
        except (httpx.HTTPError, ValueError) as exc:
            body = {"url": u, "error": f"not answering: {exc}"}
        body["url"] = u
        found.append(body)
    if json_:
        common.emit_json({"services": found})
        return
    if not found:
        common.out.print("no tvc serve running here")
        return
    for svc in found:
        if "error" in svc and "slots" not in svc:
            common.out.print(f"{svc['url']}: {svc['error']}")
            continue
        state = "ready" if svc.get("ready") else "not ready"
        common.out.print(f"{svc['url']}  {svc['name']} from {svc['source']}  {state}")
        for s in svc["slots"]:
            line = f"  {svc['model']}@{s['ref']}"
            if len(svc["slots"]) > 1:
                line += f" ({s['weight']}%)"
            line += f" → {s['version']}  swaps {s['swaps']}"
            common.out.print(line)
            if s.get("error"):
                common.out.print(f"    load of {s['failed_version']} failed: {s['error']}")
        if svc.get("poll_error"):
            common.out.print(f"  following the ref failed: {svc['poll_error']}")


def _export(kind: str, target: str, split, flavor: str, image: str, port: int) -> None:
    if kind != "kserve":
        raise UsageError(f"--export {kind}: only kserve is known")
    if split:
        raise UsageError("--export kserve: a split is KServe's canaryTrafficPercent; not emitted")
    from tvc.serving.kserve import export_yaml

    try:
        sys.stdout.write(export_yaml(target, flavor=flavor, image=image, port=port))
    except TvcError:
        raise
