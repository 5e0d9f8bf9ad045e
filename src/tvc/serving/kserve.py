"""KServe: ``tvc serve MODEL@ALIAS --export kserve`` and the storage initializer it names.

KServe fetches a model into the predictor pod with a *storage initializer* chosen by the
``storageUri``'s scheme; ``tvc://HOST[:PORT]/MODEL@REF`` is none of its own, so the export
writes a ``ClusterStorageContainer`` (``serving.kserve.io/v1alpha1``) for the ``tvc://``
prefix, whose container runs :func:`initialize` (``python -m tvc.serving.kserve URI DEST``): a
lazy clone of the server registry and a checkout of the version the ref names, laid out as
``tvc serve``'s cache (``DEST/<version id>/``). The ``InferenceService``'s predictor is a
container running ``tvc serve`` against the same server (so it follows the alias as it moves),
seeded read-only from that checkout (``--seed /mnt/models``): the first version is served
without fetching it again. The token comes from the ``tvc-token`` Secret (key ``token``).

Nothing here imports kserve: the YAML is plain data (tests load it into the kserve SDK's
models). On KServe itself, a new revision (``canaryTrafficPercent``) is the way to split.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tvc.errors import TvcError, UsageError

SCHEME = "tvc://"
MODEL_DIR = "/mnt/models"
CACHE_DIR = "/var/cache/tvc"
SECRET = {"secretKeyRef": {"name": "tvc-token", "key": "token", "optional": True}}


def parse_uri(uri: str) -> tuple[str, str, str]:
    """``tvc://HOST[:PORT][/PREFIX]/MODEL@REF`` → (server URL, model, ref).
    ``TVC_INSECURE=1`` in the environment: plain http (a cluster-internal server)."""
    if not uri.startswith(SCHEME):
        raise UsageError(f"{uri!r}: expected {SCHEME}HOST[:PORT]/MODEL@REF")
    rest = uri[len(SCHEME) :]
    base, _, tail = rest.rstrip("/").rpartition("/")
    model, _, ref = tail.partition("@")
    if not base or not model:
        raise UsageError(f"{uri!r}: expected {SCHEME}HOST[:PORT]/MODEL@REF")
    scheme = "http" if os.environ.get("TVC_INSECURE") == "1" else "https"
    return f"{scheme}://{base}", model, ref or "main"


def to_uri(server: str, model: str, ref: str) -> str:
    host = server.split("://", 1)[-1].rstrip("/")
    return f"{SCHEME}{host}/{model}@{ref}"


def manifests(
    server: str,
    model: str,
    ref: str,
    *,
    flavor: str = "auto",
    image: str = "tvc:latest",
    port: int = 8080,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """The two objects: the ``ClusterStorageContainer`` and the ``InferenceService``."""
    svc = name or model.replace("/", "-").replace(".", "-").replace("_", "-")
    insecure = server.startswith("http://")
    env = [{"name": "TVC_TOKEN", "valueFrom": SECRET}]
    if insecure:
        env.append({"name": "TVC_INSECURE", "value": "1"})
    storage = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": "tvc"},
        "spec": {
            "container": {
                "name": "storage-initializer",
                "image": image,
                "command": ["python", "-m", "tvc.serving.kserve"],
                "env": env,
                "resources": {"requests": {"memory": "200Mi", "cpu": "100m"}},
            },
            "supportedUriFormats": [{"prefix": SCHEME}],
        },
    }
    serve_cmd = [
        "tvc",
        "serve",
        f"{server.rstrip('/')}/{model}@{ref}",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--flavor",
        flavor,
        "--name",
        svc,
        "--cache",
        CACHE_DIR,
        "--seed",
        MODEL_DIR,
    ]
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": svc, "annotations": {"tvc.dev/ref": f"{model}@{ref}"}},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": image,
                        "command": serve_cmd,
                        "env": [
                            {"name": "STORAGE_URI", "value": to_uri(server, model, ref)},
                            {"name": "TVC_TOKEN", "valueFrom": SECRET},
                        ],
                        "ports": [{"containerPort": port, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": port}},
                        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": port}},
                        "volumeMounts": [{"name": "tvc-cache", "mountPath": CACHE_DIR}],
                    }
                ],
                "volumes": [{"name": "tvc-cache", "emptyDir": {}}],
            }
        },
    }
    return [storage, isvc]


def export_yaml(target: str, *, flavor: str = "auto", image: str = "tvc:latest", port: int = 8080):
    """YAML of :func:`manifests` for ``http(s)://HOST/MODEL@REF`` (the server registry the
    cluster reaches) or ``tvc://…``."""
    from tvc.remote.transport import is_url

    if target.startswith(SCHEME):
        server, model, ref = parse_uri(target)
    elif is_url(target):
        server, _, tail = target.rstrip("/").rpartition("/")
        model, _, ref = tail.partition("@")
        ref = ref or "main"
    else:
        raise UsageError(
            "--export kserve: give the server registry the cluster reaches, "
            "http(s)://HOST/MODEL@REF (a local registry is not reachable from a pod)"
        )
    docs = manifests(server, model, ref, flavor=flavor, image=image, port=port or 8080)
    try:
        import yaml
    except ImportError:  # YAML is a superset of JSON
        return "---\n".join(json.dumps(d, indent=2) + "\n" for d in docs)
    return yaml.safe_dump_all(docs, sort_keys=False)


def initialize(uri: str, dest: str | os.PathLike[str], token: str | None = None) -> Path:
    """The storage initializer: the version ``uri`` names, checked out into ``dest`` as
    ``tvc serve``'s cache lays it out (``dest/<version id>/``); returns that directory."""
    from tvc.serving.source import RemoteSource

    server, model, ref = parse_uri(uri)
    source = RemoteSource(server, model, Path(dest), token or os.environ.get("TVC_TOKEN"))
    try:
        return source.materialize(source.target(ref))
    finally:
        source.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m tvc.serving.kserve SRC_URI DEST_DIR`` (KServe's initializer arguments)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m tvc.serving.kserve tvc://HOST/MODEL@REF DEST\n")
        return 2
    try:
        path = initialize(args[0], args[1])
    except TvcError as exc:
        sys.stderr.write(f"tvc storage initializer: {exc.message}\n")
        return exc.exit_code
    sys.stderr.write(f"tvc storage initializer: {args[0]} → {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
