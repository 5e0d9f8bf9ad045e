"""The Hub protocol at the HTTP level, where the clients leave things out: Git LFS uploads
(signed URLs, hash checks), malformed commits that must change nothing, tree paging, Range
parsing (property test), and the sha a version keeps."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tvc
from tvc.server import hf as endpoint

from repo_helpers import make_model_dir


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def lfs_batch(hub, repo: str, objects: list[dict]) -> httpx.Response:
    body = {
        "operation": "upload",
        "transfers": ["basic"],
        "objects": objects,
        "hash_algo": "sha256",
    }
    return httpx.post(
        f"{hub['url']}/{repo}.git/info/lfs/objects/batch",
        json=body,
        headers={**bearer(hub["tokens"]["acme"]), "Accept": "application/vnd.git-lfs+json"},
    )


def versions_of(hub, model: str) -> int:
    reg = tvc.Registry(hub["data"])
    try:
        return len(reg.log(f"{model}@main"))
    except tvc.errors.TvcError:
        return 0
    finally:
        reg.close()


def test_lfs_upload_checks_signature_size_and_hash(hub):
    data = b"\x00binary" * 1000
    oid = hashlib.sha256(data).hexdigest()
    resp = lfs_batch(hub, "acme/lfs", [{"oid": oid, "size": len(data)}])
    assert resp.status_code == 200
    (obj,) = resp.json()["objects"]
    href = obj["actions"]["upload"]["href"]
    assert "xet" not in json.dumps(resp.json()).lower()
    # a signature for another object, a tampered one, and none: refused
    assert httpx.put(href.replace(oid, "0" * 64), content=data).status_code in (401, 400)
    assert httpx.put(href[:-4] + "0000", content=data).status_code == 401
    assert httpx.put(href.split("?")[0], content=data).status_code == 401
    # wrong bytes of the right size, too many bytes: refused, nothing kept
    assert httpx.put(href, content=b"\x01" + data[1:]).status_code == 422
    assert httpx.put(href, content=data + b"x").status_code == 422
    assert not (hub["data"] / ".tvc" / "tmp" / "hf-lfs" / oid).exists()
    assert httpx.put(href, content=data).status_code == 200  # no Authorization: the URL's
    # now held: the batch asks for it no more
    (again,) = lfs_batch(hub, "acme/lfs", [{"oid": oid, "size": len(data)}]).json()["objects"]
    assert "actions" not in again


def commit(hub, repo: str, lines: list[dict], tok: str | None = None) -> httpx.Response:
    body = "\n".join(json.dumps(x) for x in lines).encode()
    return httpx.post(
        f"{hub['url']}/api/models/{repo}/commit/main",
        content=body,
        headers={**bearer(tok or hub["tokens"]["acme"]), "Content-Type": "application/x-ndjson"},
    )


def file_line(path: str, data: bytes) -> dict:
    return {
        "key": "file",
        "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"},
    }


HEADER = {"key": "header", "value": {"summary": "s", "description": ""}}


@pytest.mark.parametrize(
    "bad",
    [
        [HEADER, file_line("../escape.txt", b"x")],
        [HEADER, file_line("/abs.txt", b"x")],
        [HEADER, file_line(".git/config", b"x")],
        [HEADER, {"key": "file", "value": {"path": "a.txt", "content": "%%%"}}],
        [
            HEADER,
            {
                "key": "lfsFile",
                "value": {"path": "w.bin", "algo": "sha256", "oid": "ab" * 32, "size": 3},
            },
        ],
        [HEADER, {"key": "mystery", "value": {}}],
        [HEADER],
    ],
)
def test_a_malformed_commit_is_refused_and_changes_nothing(hub, bad):
    before = versions_of(hub, "acme/tiny")
    resp = commit(hub, "acme/tiny", bad)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["error"]
    assert versions_of(hub, "acme/tiny") == before


def test_commit_to_a_tag_or_with_a_stale_parent_is_refused(hub):
    base = hub["url"] + "/api/models/acme/tiny/commit/"
    h = {**bearer(hub["tokens"]["acme"]), "Content-Type": "application/x-ndjson"}
    line = json.dumps(file_line("n.txt", b"n")).encode()
    assert httpx.post(base + "release-3", content=line, headers=h).status_code == 400
    stale = {"key": "header", "value": {"summary": "s", "parentCommit": "0" * 40}}
    body = json.dumps(stale).encode() + b"\n" + line
    assert httpx.post(base + "main", content=body, headers=h).status_code == 412


def test_tree_pages_follow_link(hub, tmp_path):
    reg = tvc.Registry(hub["data"])
    try:
        out = tmp_path / "many"
        out.mkdir()
        for i in range(endpoint.TREE_PAGE + 5):
            (out / f"f{i:05d}.txt").write_text(str(i))
        reg.commit("acme/many", [out], "many", detect_code=False)
    finally:
        reg.close()
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub["url"], token=hub["tokens"]["read"])
    files = api.list_repo_files("acme/many")
    assert len(files) == endpoint.TREE_PAGE + 5 == len(set(files))
    first = httpx.get(
        f"{hub['url']}/api/models/acme/many/tree/main", headers=bearer(hub["tokens"]["read"])
    )
    assert 'rel="next"' in first.headers["link"]


def test_the_sha_of_a_version_does_not_change_when_refs_move(hub):
    url, h = hub["url"], bearer(hub["tokens"]["read"])
    sha = httpx.get(f"{url}/api/models/acme/tiny/revision/v1", headers=h).json()["sha"]
    assert sha == hub["shas"]["v1"] and len(sha) == 40
    reg = tvc.Registry(hub["data"])
    try:
        reg.set_alias("acme/tiny", "moving", "v1")
        assert (
            httpx.get(f"{url}/api/models/acme/tiny/revision/moving", headers=h).json()["sha"] == sha
        )
        reg.set_alias("acme/tiny", "moving", "v2")
        moved = httpx.get(f"{url}/api/models/acme/tiny/revision/moving", headers=h).json()
        assert moved["sha"] == hub["shas"]["v2"]
    finally:
        reg.close()
    assert httpx.get(f"{url}/api/models/acme/tiny/revision/{sha}", headers=h).json()["sha"] == sha


def test_a_file_committed_without_sha256_gets_a_40_hex_etag(hub, tmp_path):
    """Manifests made before SHA-256s were recorded: a stable ETag that is not 64 hex."""
    reg = tvc.Registry(hub["data"])
    try:
        v = reg.resolve("acme/tiny@v1")
        m = reg.manifest(v.files[0].manifest_id)
    finally:
        reg.close()
    old = endpoint.Manifest(m.size, m.digest, m.format, m.chunks, m.tensors, m.metadata)
    assert endpoint.etag_of(old) == m.digest[:40]
    assert endpoint.etag_of(m) == m.sha256 and len(m.sha256) == 64


@given(size=st.integers(0, 10**6), a=st.integers(0, 2 * 10**6), b=st.integers(0, 2 * 10**6))
def test_parse_range_matches_http_semantics(size, a, b):
    data = range(size)
    for header, want in (
        (f"bytes={a}-{b}", (a, min(b + 1, size)) if a < size and b >= a else None),
        (f"bytes={a}-", (a, size) if a < size else None),
        (f"bytes=-{b}", (max(size - b, 0), size) if b > 0 and size > 0 else None),
    ):
        try:
            got = endpoint.parse_range(header, size)
        except endpoint.HfError as exc:
            assert want is None and exc.status == 416, header
            continue
        assert got == want, header
        assert len(data[got[0] : got[1]]) == got[1] - got[0]
    assert endpoint.parse_range(None, size) is None


@given(st.text(max_size=40))
def test_parse_range_never_crashes(header):
    try:
        endpoint.parse_range(header, 100)
    except endpoint.HfError as exc:
        assert exc.status == 416


def test_make_model_dir_helper_is_shared(tmp_path):  # the fixtures' data comes from it
    assert "layers.0.weight" in make_model_dir(tmp_path / "m", n_layers=1, width=4)


def test_a_single_segment_model_name(hub, tmp_path, cache):
    reg = tvc.Registry(hub["data"])
    try:
        make_model_dir(tmp_path / "solo", seed=5, n_layers=1, width=8)
        want = (tmp_path / "solo" / "config.json").read_bytes()
        reg.commit("solo", [tmp_path / "solo"], "solo", detect_code=False)
    finally:
        reg.close()
    from huggingface_hub import HfApi, hf_hub_download

    tok = hub["tokens"]["read"]
    assert HfApi(endpoint=hub["url"], token=tok).model_info("solo").id == "solo"
    got = hf_hub_download("solo", "config.json", cache_dir=cache, token=tok)
    assert Path(got).read_bytes() == want


def test_xet_is_refused_in_words_for_any_model(hub):
    h = bearer(hub["tokens"]["read"])
    for repo in ("acme/tiny", "secret/model", "no/such"):
        resp = httpx.get(f"{hub['url']}/api/models/{repo}/xet-write-token/main", headers=h)
        assert resp.status_code == 501
        assert "HF_HUB_DISABLE_XET=1" in resp.headers["x-error-message"]
