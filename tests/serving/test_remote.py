"""Serving from a server registry (a real ``tvc server`` on loopback): a lazy clone fetches the
served version's chunks only, the alias is followed on the server; and the KServe export — its
YAML loaded into the kserve SDK's models, its storage initializer run as KServe runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

import tvc
from server_helpers import running_server, token
from serving_helpers import infer_body, running_serve, sklearn_dir, training_data, wait_for
from tvc.serving import kserve as ks
from tvc.serving.source import COMPLETE
from tvc.store import index

X = training_data()[0][:2]


@pytest.fixture
def server(reg, commit):
    for c in (1.0, 0.1, 0.01):
        commit("clf", sklearn_dir, c)
    reg.alias("clf", "production", "v1")
    secret = token(reg.root, "reader", "read")
    with running_server(reg.root) as (url, _proc):
        yield url, secret


def chunks_stored(registry_dir: Path) -> set[str]:
    r = tvc.Registry(registry_dir)
    try:
        with r.meta.read() as conn:
            q = sa.select(index.chunks.c.id).where(index.chunks.c.kind == 0)
            return {row[0] for row in conn.execute(q)}
    finally:
        r.close()


def version_chunks(reg, ref: str) -> set[str]:
    v = reg.resolve(ref)
    return {c for fe in v.files for c, _n in reg.manifest(fe.manifest_id).chunks}


def test_serves_and_follows_an_alias_on_a_server(reg, server, cache):
    url, secret = server
    env = {"TVC_TOKEN": secret}
    with (
        running_serve([f"{url}/clf@production"], reg.root, cache, env) as (surl, _p),
        httpx.Client(base_url=surl, timeout=30) as c,
    ):
        r = c.post("/v2/models/clf/infer", json=infer_body(X))
        assert r.status_code == 200 and r.headers["x-tvc-version"] == "clf@v1"
        (clone,) = (cache / "registries").iterdir()
        have = chunks_stored(clone)
        assert version_chunks(reg, "clf@v1") <= have
        assert not version_chunks(reg, "clf@v3") & have - version_chunks(reg, "clf@v1")
        reg.alias("clf", "production", "v3")  # moved on the server
        wait_for(
            lambda: (
                c.post("/v2/models/clf/infer", json=infer_body(X)).headers["x-tvc-version"]
                == "clf@v3"
            )
        )
        assert "production" in c.get("/v2/tvc/status").json()["slots"][0]["ref"]


def test_a_wrong_token_is_a_clear_error(reg, server, cache, tmp_path):
    url, _secret = server
    r = subprocess.run(
        [sys.executable, "-m", "tvc", "serve", f"{url}/clf@production", "--cache", str(cache)],
        capture_output=True,
        text=True,
        env={**os.environ, "TVC_TOKEN": "wrong"},
        cwd=tmp_path,
    )
    assert r.returncode == 12, r.stderr  # AccessError
    assert len(r.stderr.strip().splitlines()) == 1


def _strict(data, klass: str):
    """Load ``data`` into the kserve/kubernetes SDK model ``klass``, refusing unknown keys."""
    import kserve
    import kubernetes.client

    if klass.lower().startswith("list["):
        return [_strict(x, klass[5:-1]) for x in data]
    if klass.lower().startswith(("dict(", "dict[")):
        inner = klass[5:-1].split(", ", 1)[1]
        return {k: _strict(v, inner) for k, v in data.items()}
    if klass in ("str", "int", "bool", "object", "float", "datetime"):
        return data
    cls = getattr(kserve.models, klass, None) or getattr(kubernetes.client, klass)
    by_json = {v: k for k, v in cls.attribute_map.items()}
    unknown = set(data) - set(by_json)
    assert not unknown, f"{klass} has no field {unknown}"
    kw = {by_json[k]: _strict(v, cls.openapi_types[by_json[k]]) for k, v in data.items()}
    return cls(**kw)


def test_kserve_export_loads_into_the_sdk_models(reg, server, tmp_path):
    url, _secret = server
    out = subprocess.run(
        [sys.executable, "-m", "tvc", "serve", f"{url}/clf@production", "--export", "kserve"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    storage, isvc = yaml.safe_load_all(out)
    csc = _strict(storage, "V1alpha1ClusterStorageContainer")
    assert csc.spec.supported_uri_formats[0].prefix == "tvc://"
    assert csc.spec.container.command == ["python", "-m", "tvc.serving.kserve"]
    svc = _strict(isvc, "V1beta1InferenceService")
    (container,) = svc.spec.predictor.containers
    assert container.command[:3] == ["tvc", "serve", f"{url}/clf@production"]
    env = {e.name: e.value for e in container.env}
    assert env["STORAGE_URI"] == "tvc://" + url.split("://")[1] + "/clf@production"
    assert container.readiness_probe.http_get.path == "/v2/health/ready"


def test_storage_initializer_checks_out_what_serve_then_uses(reg, server, tmp_path, cache):
    url, secret = server
    uri = ks.to_uri(url, "clf", "production")
    dest = tmp_path / "mnt-models"
    env = {**os.environ, "TVC_TOKEN": secret, "TVC_INSECURE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "tvc.serving.kserve", uri, str(dest)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    vid = reg.resolve("clf@v1").id
    assert (dest / vid / "model.skops").read_bytes() == reg.read("clf@v1", "model.skops")
    assert (dest / vid / COMPLETE).exists()
    bad = subprocess.run(
        [sys.executable, "-m", "tvc.serving.kserve", uri.replace("clf@", "nope@"), str(dest)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode != 0 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    dest.chmod(0o555)  # KServe mounts it read-only in the predictor
    try:
        args = [f"{url}/clf@production", "--seed", str(dest)]
        with running_serve(args, tmp_path, cache, {"TVC_TOKEN": secret}) as (surl, _p):
            r = httpx.post(f"{surl}/v2/models/clf/infer", json=infer_body(X), timeout=30)
            assert r.headers["x-tvc-version-id"] == vid
        assert not (cache / vid).exists()  # served from the seed, not checked out again
    finally:
        dest.chmod(0o755)
