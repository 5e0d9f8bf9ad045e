"""What the S3 backend promises beyond the conformance suite (tests/store/test_backends.py):
create-only writes, ranged GETs, multipart uploads, retries of transient failures and one clear
error for permanent ones. Against a real SeaweedFS, with faults injected by a proxy in front of
it (tests/faults.py ``S3Proxy``)."""

from __future__ import annotations

import os
import threading
import urllib.parse

import pytest

from tvc.errors import StorageError, UsageError
from tvc.store.backends import open_backend
from tvc.store.backends.s3 import S3Backend, S3Location

from faults import S3Proxy

MiB = 1024 * 1024


@pytest.fixture
def proxy(_seaweed):
    p = S3Proxy(_seaweed)
    yield p
    p.close()


@pytest.fixture
def via_proxy(s3_url, proxy):
    """An S3 backend whose requests all pass the proxy; quick retries."""
    url = s3_url.replace(f"endpoint={_endpoint(s3_url)}", f"endpoint={proxy.url}")
    b = open_backend(url)
    b.backoff = 0.01
    b.attempts = 4
    yield b
    b.close()


def _endpoint(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["endpoint"][0]


def test_url_parsing():
    loc = S3Location("s3://my-bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-1")
    assert (loc.bucket, loc.prefix, loc.endpoint, loc.region) == (
        "my-bucket",
        "some/prefix",
        "http://127.0.0.1:9000",
        "eu-1",
    )
    assert loc.key("packs/ab/x") == "some/prefix/packs/ab/x"
    assert S3Location("s3://b1b").key("x") == "x"
    for bad in (
        "s3://",
        "s3://UP/x",
        "s3://b1b/a/../b",
        "s3://b1b?endpoint=ftp://h",
        "s3://b1b?k=1",
    ):
        with pytest.raises(UsageError):
            S3Location(bad)


def test_puts_are_create_only(via_proxy, proxy):
    via_proxy.put("packs/aa/p", b"pack bytes")
    (put,) = proxy.seen("PUT")
    assert put[3].get("if-none-match") == "*"
    # A second put of the same bytes meets the existing object (412) and is done with it.
    via_proxy.put("packs/aa/p", b"pack bytes")
    assert len(proxy.seen("PUT")) == 2
    assert via_proxy.get("packs/aa/p") == b"pack bytes"


def test_concurrent_writers_of_one_name_all_succeed_and_leave_it_whole(s3_url):
    b = open_backend(s3_url)
    body = os.urandom(2 * MiB)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            b.put("packs/cc/same", body)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert b.get("packs/cc/same") == body


def test_reads_are_ranged_gets(via_proxy, proxy):
    via_proxy.put("obj", bytes(range(256)) * 4)
    assert via_proxy.get("obj", 5, 10) == (bytes(range(256)) * 4)[5:15]
    assert via_proxy.get("obj", 1000) == (bytes(range(256)) * 4)[1000:]
    ranges = [r[3].get("range") for r in proxy.seen("GET")]
    assert ranges == ["bytes=5-14", "bytes=1000-"]


def test_large_objects_go_up_in_multipart_uploads(via_proxy, proxy, tmp_path):
    via_proxy.multipart_threshold = 6 * MiB
    via_proxy.part_size = 5 * MiB
    src = tmp_path / "big"
    data = os.urandom(12 * MiB + 123)
    src.write_bytes(data)
    via_proxy.put("packs/bb/big", src)
    assert len(proxy.seen("PUT", "partNumber=")) == 3
    (complete,) = proxy.seen("POST", "uploadId=")
    assert complete[3].get("if-none-match") == "*"
    assert via_proxy.get("packs/bb/big") == data
    # a ranged read across the part boundary
    assert via_proxy.get("packs/bb/big", 5 * MiB - 10, 20) == data[5 * MiB - 10 : 5 * MiB + 10]
    # again: the completion meets the existing object; the upload is aborted, the object kept
    via_proxy.put("packs/bb/big", src)
    assert via_proxy.get("packs/bb/big") == data
    assert _open_uploads(via_proxy) == []


def test_a_failed_multipart_upload_is_aborted(via_proxy, proxy, tmp_path):
    via_proxy.multipart_threshold = 6 * MiB
    via_proxy.part_size = 5 * MiB
    src = tmp_path / "big"
    src.write_bytes(os.urandom(11 * MiB))
    proxy.plan = lambda m, p, q, h: 400 if "partNumber=2" in q else None
    with pytest.raises(StorageError, match="UploadPart 2/3"):
        via_proxy.put("packs/bb/broken", src)
    proxy.plan = lambda m, p, q, h: None
    assert not via_proxy.exists("packs/bb/broken")
    assert _open_uploads(via_proxy) == []


def _open_uploads(b: S3Backend) -> list[str]:
    got = b._client.list_multipart_uploads(Bucket=b.loc.bucket, Prefix=b.loc.key(""))
    return [u["Key"] for u in got.get("Uploads", [])]


def test_transient_failures_are_retried(via_proxy, proxy):
    failures = {"PUT": 2, "GET": 1, "HEAD": 1}

    def plan(method, path, query, headers):
        if failures.get(method, 0) > 0:
            failures[method] -= 1
            return 503 if method != "GET" else "drop"
        return None

    proxy.plan = plan
    via_proxy.put("x", b"survives")
    assert via_proxy.get("x") == b"survives"
    assert via_proxy.size("x") == 8
    assert len(proxy.seen("PUT")) == 3
    assert len(proxy.seen("GET")) == 2


def test_a_failure_that_persists_is_reported_once_after_the_last_attempt(via_proxy, proxy):
    proxy.plan = lambda m, p, q, h: 503
    with pytest.raises(StorageError, match=r"PUT s3://.*/x failed after 4 attempts: 503 SlowDown"):
        via_proxy.put("x", b"never")
    assert len(proxy.seen("PUT")) == 4


def test_a_permanent_failure_is_not_retried(via_proxy, proxy):
    proxy.plan = lambda m, p, q, h: 400
    with pytest.raises(StorageError, match="400 InvalidRequest"):
        via_proxy.put("x", b"never")
    assert len(proxy.seen("PUT")) == 1


def test_wrong_credentials_are_one_clear_error(s3_url, monkeypatch, proxy):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    b = open_backend(s3_url.replace(f"endpoint={_endpoint(s3_url)}", f"endpoint={proxy.url}"))
    with pytest.raises(StorageError, match=r"access denied .*check the AWS credentials"):
        b.put("x", b"never")
    assert len(proxy.requests) == 1


def test_a_missing_bucket_is_named(_seaweed, s3_env):
    b = open_backend(f"s3://no-such-bucket-here?endpoint={_seaweed}")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        b.check_bucket()


def test_an_unreachable_endpoint_is_reported_after_the_retries(s3_env):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = open_backend(f"s3://b1b?endpoint=http://127.0.0.1:{port}")
    b.backoff, b.attempts = 0.01, 3
    with pytest.raises(StorageError, match="failed after 3 attempt"):
        b.get("x")
