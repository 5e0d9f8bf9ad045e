"""The OIP v2 app in-process (FastAPI's TestClient over the real app, a real registry and real
scikit-learn models); the follower is stepped by hand (``poll_once``), so nothing is timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving_helpers import infer_body, python_dir, sklearn_dir, training_data
from tvc.serving.app import create_app
from tvc.serving.service import Service
from tvc.serving.source import LocalSource

X = training_data()[0][:3]


def service_for(reg, cache: Path, refs, **kw) -> Service:
    svc = Service(LocalSource(reg, "clf", cache), "clf", refs, **kw)
    svc.start(follow=False)
    return svc


@pytest.fixture
def two(reg, commit):
    v1 = commit("clf", sklearn_dir, 1.0)
    v2 = commit("clf", sklearn_dir, 0.001)
    reg.alias("clf", "production", "v1")
    return v1, v2


@pytest.fixture
def client(reg, two, cache):
    svc = service_for(reg, cache, [("production", 100)])
    with TestClient(create_app(svc, max_bytes=10_000)) as c:
        c.service = svc
        yield c


def test_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    meta = client.get("/v2/models/clf").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "predict": "INT64",
        "predict_proba": "FP64",
    }
    assert meta["parameters"]["tvc_version"] == "clf@v1"
    assert client.get("/v2/models/clf/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert "error" in client.get("/v2/models/nope").json()


def test_infer_answers_as_the_model_does(client, reg, two, cache):
    r = client.post("/v2/models/clf/infer", json={"id": "r1", **infer_body(X)})
    assert r.status_code == 200, r.text
    assert r.headers["x-tvc-version"] == "clf@v1"
    assert r.headers["x-tvc-version-id"] == two[0].id
    body = r.json()
    assert body["id"] == "r1" and body["model_version"] == "v1"
    native = client.service.slots[0].current.model.est
    out = {o["name"]: o for o in body["outputs"]}
    assert out["predict"]["data"] == native.predict(X).tolist()
    np.testing.assert_allclose(
        np.array(out["predict_proba"]["data"]).reshape(3, 2), native.predict_proba(X)
    )
    only = client.post(
        "/v2/models/clf/infer", json={**infer_body(X), "outputs": [{"name": "predict"}]}
    ).json()
    assert [o["name"] for o in only["outputs"]] == ["predict"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        (infer_body(X, datatype="FP32"), "takes FP64, not FP32"),
        (infer_body(X[:, :3]), "takes shape [-1, 4], not [3, 3]"),
        (infer_body(X, name="other"), "unknown input 'other'"),
        ({"inputs": []}, "non-empty 'inputs'"),
        ({**infer_body(X), "outputs": [{"name": "nope"}]}, "unknown output 'nope'"),
        (
            {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4], "data": [1]}]},
            "needs 12 values",
        ),
    ],
)
def test_bad_requests_get_a_4xx_with_the_oip_error_body(client, body, fragment):
    r = client.post("/v2/models/clf/infer", json=body)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_a_request_too_large_is_refused_before_it_is_read(client):
    def body():  # a chunked body (no Content-Length): refused once it passes the limit
        for _ in range(100):
            yield b" " * 1000

    r = client.post("/v2/models/clf/infer", content=body())
    assert r.status_code == 413
    big = json.dumps(infer_body(np.zeros((1000, 4)))).encode()
    r = client.post(
        "/v2/models/clf/infer", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
    metrics = client.get("/metrics").text
    assert 'tvc_serve_errors_total{kind="too_large",model="clf"} 2.0' in metrics


def test_follows_the_alias_and_keeps_the_old_version_addressable(client, reg, two):
    svc = client.service
    reg.alias("clf", "production", "v2")
    svc.poll_once()
    r = client.post("/v2/models/clf/infer", json=infer_body(X))
    assert r.headers["x-tvc-version"] == "clf@v2"
    assert r.json()["model_version"] == "v2"
    old = client.post("/v2/models/clf/versions/v1/infer", json=infer_body(X))
    assert old.headers["x-tvc-version"] == "clf@v1"
    by_id = client.post(f"/v2/models/clf/versions/{two[1].id[:12]}/infer", json=infer_body(X))
    assert by_id.headers["x-tvc-version"] == "clf@v2"
    assert client.get("/v2/models/clf/versions/v9/ready").status_code == 404
    assert client.get("/v2/models/clf/versions/v1").json()["parameters"]["tvc_version"] == "clf@v1"
    reg.rollback("clf", "production")
    svc.poll_once()
    r = client.post("/v2/models/clf/infer", json=infer_body(X))
    assert r.headers["x-tvc-version"] == "clf@v1"
    metrics = client.get("/metrics").text
    assert 'tvc_serve_version_info{model="clf",ref="production",version="clf@v1"' in metrics
    assert 'version="clf@v2"' not in metrics.split("tvc_serve_version_info")[-1].split("\n#")[0]
    assert 'tvc_serve_swaps_total{model="clf",ref="production"} 2.0' in metrics


def test_a_failed_load_keeps_the_old_version_and_is_reported(client, reg, commit, tmp_path):
    svc = client.service

    def broken(dest: Path) -> Path:
        dest.mkdir()
        (dest / "model.skops").write_bytes(b"not a zip at all")
        return dest

    commit("clf", broken)  # v3
    reg.alias("clf", "production", "v3")
    svc.poll_once()
    r = client.post("/v2/models/clf/infer", json=infer_body(X))
    assert r.status_code == 200 and r.headers["x-tvc-version"] == "clf@v1"
    slot = svc.status()["slots"][0]
    assert slot["failed_version"] == "clf@v3" and "failed to load" in slot["error"]
    metrics = client.get("/metrics").text
    assert 'tvc_serve_load_failures_total{model="clf",ref="production"} 1.0' in metrics
    status = client.get("/v2/tvc/status").json()
    assert status["slots"][0]["version"] == "clf@v1"
    svc.poll_once()  # not tried again while the alias stays there
    assert 'tvc_serve_load_failures_total{model="clf",ref="production"} 1.0' in (
        client.get("/metrics").text
    )
    reg.alias("clf", "production", "v2")  # a good version after it: served, error cleared
    svc.poll_once()
    assert client.post("/v2/models/clf/infer", json=infer_body(X)).headers["x-tvc-version"] == (
        "clf@v2"
    )
    assert svc.status()["slots"][0]["error"] is None


def test_a_version_is_checked_out_once_into_the_cache(reg, two, cache):
    src = LocalSource(reg, "clf", cache)
    t = src.target("production")
    path = src.materialize(t)
    assert path == cache / two[0].id and (path / "model.skops").is_file()
    (path / "model.skops").unlink()  # a cached checkout is not checked out again
    assert src.materialize(t) == path and not (path / "model.skops").exists()


def test_split_routes_by_weight_and_sticks_per_client(reg, commit, cache):
    commit("clf", sklearn_dir, 1.0)
    commit("clf", sklearn_dir, 0.001)
    reg.alias("clf", "production", "v1")
    reg.alias("clf", "canary", "v2")
    svc = service_for(reg, cache, [("production", 90), ("canary", 10)])
    with TestClient(create_app(svc)) as c:
        seen = {"clf@v1": 0, "clf@v2": 0}
        for _ in range(400):
            r = c.post("/v2/models/clf/infer", json=infer_body(X))
            seen[r.headers["x-tvc-version"]] += 1
            assert (
                r.headers["x-tvc-ref"]
                == {"clf@v1": "production", "clf@v2": "canary"}[r.headers["x-tvc-version"]]
            )
        # 10 % of 400 = 40 expected; 6 standard deviations (sd = 6) either side
        assert 4 <= seen["clf@v2"] <= 76, seen
        for key in ("alice", "bob", "carol", "dave"):
            got = {
                c.post(
                    "/v2/models/clf/infer", json=infer_body(X), headers={"x-tvc-client": key}
                ).headers["x-tvc-version"]
                for _ in range(20)
            }
            assert len(got) == 1, (key, got)
        keys = [f"client-{i}" for i in range(300)]
        canary = sum(svc.choose(k).ref == "canary" for k in keys)
        assert 5 <= canary <= 60


def test_python_flavor_and_binary_tensors(reg, commit, cache):
    commit("clf", python_dir, 2.0)
    svc = service_for(reg, cache, [("main", 100)])
    with TestClient(create_app(svc)) as c:
        x = np.arange(8, dtype=np.float64).reshape(2, 4)
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP64",
                        "shape": [2, 4],
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            }
        ).encode()
        r = c.post(
            "/v2/models/clf/infer",
            content=head + x.tobytes(),
            headers={
                "inference-header-content-length": str(len(head)),
                "content-type": "application/octet-stream",
            },
        )
        assert r.status_code == 200, r.text
        n = int(r.headers["inference-header-content-length"])
        meta = json.loads(r.content[:n])
        assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
        np.testing.assert_array_equal(np.frombuffer(r.content[n:], "<f8"), x.sum(1) * 2.0)
