"""The Open Inference Protocol v2 REST app of ``tvc serve`` (FastAPI; uvicorn runs it).

Routes: ``/v2`` (server metadata), ``/v2/health/live`` and ``/ready`` (JSON bodies: kserve's
client parses them), ``/v2/models/{name}`` (+ ``/ready``, ``/infer``) and the same under
``/versions/{v}`` (``v3`` or an id prefix of a loaded version), ``/metrics`` (Prometheus), and
``/v2/tvc/status`` (what ``tvc serve status`` shows). Every inference response names the
version that answered in ``x-tvc-version`` (``MODEL@vN``) and ``x-tvc-version-id``.

The infer route reads the body itself rather than through a pydantic model: a body larger than
``max_bytes`` is refused from its ``Content-Length`` before a byte of it is read (or as soon as a
chunked body passes the limit), and the binary tensor extension is not JSON. Decoding,
prediction and encoding run in a worker thread, so one slow model call does not stall the
event loop's health checks.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tvc.errors import InferenceInputError, RefError, TvcError
from tvc.serving import protocol
from tvc.serving.service import Loaded, Service, Slot

HEADER_LENGTH = "inference-header-content-length"
CLIENT_KEY = "x-tvc-client"
DEFAULT_MAX_BYTES = 64 << 20


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(service: Service, *, max_bytes: int = DEFAULT_MAX_BYTES) -> FastAPI:
    from tvc import __version__

    app = FastAPI(title="tvc serve", version=__version__, docs_url=None, redoc_url=None)
    app.state.service = service
    m = service.metrics

    def model_of(name: str, version: str | None) -> Loaded:
        if name != service.name:
            raise HTTPError(
                404, f"unknown model {name!r} (this service serves {service.name})", "not_found"
            )
        if version is not None:
            try:
                return service.version(version)
            except RefError as exc:
                raise HTTPError(404, exc.message, "not_found") from None
        slot = service.slots[0]
        if slot.current is None:
            raise HTTPError(503, f"{service.name} is not loaded yet", "not_ready")
        return slot.current

    @app.exception_handler(HTTPError)
    async def _http_error(_request: Request, exc: HTTPError) -> JSONResponse:
        m.errors.labels(service.name, exc.kind).inc()
        return _error(exc.status, exc.message)

    @app.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "tvc", "version": __version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> Response:
        ok = service.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    def metadata(name: str, version: str | None) -> dict[str, Any]:
        loaded = model_of(name, version)
        return {
            "name": service.name,
            "versions": [h.name for h in service.loaded()],
            "platform": f"tvc-{loaded.model.flavor}",
            "inputs": [s.to_json() for s in loaded.model.inputs],
            "outputs": [s.to_json() for s in loaded.model.outputs],
            "parameters": {
                "tvc_model": service.model,
                "tvc_version": loaded.target.ref,
                "tvc_version_id": loaded.target.vid,
            },
        }

    @app.get("/v2/models/{name}")
    def model_metadata(name: str) -> dict[str, Any]:
        return metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    def version_metadata(name: str, version: str) -> dict[str, Any]:
        return metadata(name, version)

    @app.get("/v2/models/{name}/ready")
    def model_ready(name: str) -> dict[str, Any]:
        model_of(name, None)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}/ready")
    def version_ready(name: str, version: str) -> dict[str, Any]:
        loaded = model_of(name, version)
        return {"name": name, "version": loaded.name, "ready": True}

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise HTTPError(400, "bad Content-Length", "input")
            if int(length) > max_bytes:
                raise HTTPError(413, f"request of {length} bytes exceeds {max_bytes}", "too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HTTPError(413, f"request exceeds {max_bytes} bytes", "too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def answer(loaded: Loaded, body: bytes, header_length: int | None) -> tuple[bytes, int | None]:
        try:
            req = protocol.decode(body, header_length)
            loaded.model.check(req.inputs, req.datatypes)
        except InferenceInputError as exc:
            raise HTTPError(400, exc.message, "input") from None
        try:
            outputs = loaded.model.predict(req.inputs)
        except TvcError as exc:
            raise HTTPError(400, exc.message, "input") from None
        except Exception as exc:  # the model's own failure: 500 with one line, never a trace
            detail = " ".join(str(exc).split())[:300]
            raise HTTPError(500, f"model failed: {type(exc).__name__}: {detail}", "model") from None
        if req.outputs is not None:
            unknown = [o for o in req.outputs if o not in outputs]
            if unknown:
                raise HTTPError(400, f"unknown output {unknown[0]!r}", "input")
            outputs = {o: outputs[o] for o in req.outputs}
        try:
            return protocol.encode(
                service.name,
                loaded.name,
                outputs,
                request_id=req.id,
                binary=req.binary_outputs,
            )
        except InferenceInputError as exc:
            raise HTTPError(500, f"model output: {exc.message}", "model") from None

    async def infer(request: Request, name: str, version: str | None) -> Response:
        t0 = time.perf_counter()
        slot: Slot | None = None
        if version is None:
            if name != service.name:
                model_of(name, None)
            slot = service.choose(request.headers.get(CLIENT_KEY))
            loaded = slot.current  # read once: the swap cannot change it under this request
            if loaded is None:
                raise HTTPError(503, f"{service.name} is not loaded yet", "not_ready")
        else:
            loaded = model_of(name, version)
        code = 200
        try:
            body = await read_body(request)
            hl = request.headers.get(HEADER_LENGTH)
            if hl is not None and not hl.isdigit():
                raise HTTPError(400, f"bad {HEADER_LENGTH}", "input")
            content, json_length = await run_in_threadpool(
                answer, loaded, body, int(hl) if hl is not None else None
            )
        except HTTPError as exc:
            code = exc.status
            raise
        finally:
            m.requests.labels(service.name, loaded.target.ref, str(code)).inc()
            m.latency.labels(service.name).observe(time.perf_counter() - t0)
        headers = {
            "x-tvc-version": loaded.target.ref,
            "x-tvc-version-id": loaded.target.vid,
        }
        if slot is not None:
            headers["x-tvc-ref"] = slot.ref
        if json_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers[HEADER_LENGTH] = str(json_length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    @app.post("/v2/models/{name}/infer")
    async def model_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def version_infer(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v2/tvc/status")
    def status() -> dict[str, Any]:
        return service.status()

    return app
