"""``tvc serve`` as a process, checked by clients it did not write: kserve's
``InferenceRESTClient`` (JSON and the binary tensor extension), a raw socket that promises a
huge body, and ``tvc serve status``."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

import tvc
from serving_helpers import running_serve, sklearn_dir, training_data

X = training_data()[0][:5]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One ``tvc serve clf@production`` for this module's tests, and the estimator it serves."""
    import skops.io as sio

    base = tmp_path_factory.mktemp("serve-proc")
    reg = tvc.Registry.init(base / "reg")
    reg.commit("clf", [sklearn_dir(base / "m1", 1.0)], "v1", detect_code=False)
    reg.alias("clf", "production", "v1")
    est = sio.load(base / "m1" / "model.skops")
    cache = base / "cache"
    with running_serve(["clf@production"], reg.root, cache) as (url, _proc):
        yield url, est, reg, cache
    reg.close()


def test_kserve_rest_client_passes(served):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    url, est, _reg, _cache = served

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            assert await client.is_server_live(url) is True
            assert await client.is_server_ready(url) is True
            assert await client.is_model_ready(url, "clf") is True
            assert await client.is_model_ready(url, "nope") is False
            results = []
            for binary in (False, True):  # JSON, then the binary extension (kserve's default)
                inp = InferInput("input-0", list(X.shape), "FP64")
                inp.set_data_from_numpy(X, binary_data=binary)
                outputs = [
                    RequestedOutput("predict", {"binary_data": binary}),
                    RequestedOutput("predict_proba", {"binary_data": binary}),
                ]
                req = InferRequest("clf", [inp], request_id="k1", request_outputs=outputs)
                headers: dict[str, str] = {}
                res = await client.infer(url, req, model_name="clf", response_headers=headers)
                assert headers["x-tvc-version"] == "clf@v1"
                assert res.id == "k1"
                got = {o.name: o.as_numpy() for o in res.outputs}
                results.append(got)
            bad = InferInput("input-0", [5, 3], "FP64")
            bad.set_data_from_numpy(X[:, :3], binary_data=False)
            try:
                await client.infer(url, InferRequest("clf", [bad]), model_name="clf")
            except Exception as exc:  # httpx.HTTPStatusError carrying the OIP error text
                assert "takes shape [-1, 4], not [5, 3]" in str(exc)
                assert exc.response.status_code == 400
            else:
                raise AssertionError("a wrong shape was accepted")
            return results
        finally:
            await client.close()

    for got in asyncio.run(run()):
        np.testing.assert_array_equal(got["predict"], est.predict(X))
        np.testing.assert_allclose(got["predict_proba"], est.predict_proba(X))


def test_a_huge_body_is_refused_from_its_header(served):
    """The server answers 413 without waiting for (or reading) the promised terabyte."""
    url, *_ = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v2/models/clf/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000000\r\n\r\n{"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b'"error"' in reply


def test_status_shows_what_is_served(served):
    url, _est, reg, cache = served
    cmd = [sys.executable, "-m", "tvc", "serve", "status", "--cache", str(cache)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert url in out and "clf@production → clf@v1" in out
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True).stdout
    (svc,) = json.loads(out)["services"]
    assert svc["slots"][0]["version_id"] == reg.resolve("clf@v1").id
    assert svc["ready"] is True


def test_bad_arguments_are_one_line_errors(tmp_path):
    tvc.Registry.init(tmp_path).close()

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "tvc", "-R", str(tmp_path), "serve", *args],
            capture_output=True,
            text=True,
        )

    for args, fragment in [
        (["nope@production"], "unknown model 'nope'"),
        (["m", "--split", "a=x"], "--split: expected REF=WEIGHT"),
        (["m", "--flavor", "tensorflow"], None),
    ]:
        r = run(*args)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        if fragment:
            assert fragment in r.stderr
