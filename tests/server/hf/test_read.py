"""The read half of the Hub API with the real ``huggingface_hub`` client against a real server:
repo info, tree, downloads by every kind of tvc revision, Range, ETags, the cache, errors."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import tvc
from hf_helpers import MODEL, PRIVATE, Counter

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def files_of(hub, ref: str) -> dict[str, bytes]:
    reg = tvc.Registry(hub["data"])
    try:
        v = reg.resolve(ref)
        return {fe.path: reg.read(v, fe.path) for fe in v.files}
    finally:
        reg.close()


def tree_bytes(folder: str | Path) -> dict[str, bytes]:
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }


def test_model_info_gives_id_sha_siblings_and_blob_sizes(hub):
    api = HfApi(endpoint=hub["url"], token=hub["tokens"]["read"])
    info = api.model_info(MODEL)
    assert info.id == MODEL
    assert info.sha == hub["shas"]["v2"]  # main
    want = files_of(hub, f"{MODEL}@v2")
    assert sorted(s.rfilename for s in info.siblings) == sorted(want)
    assert api.model_info(MODEL, revision="production").sha == hub["shas"]["v1"]
    full = api.model_info(MODEL, revision="v1", files_metadata=True)
    v1 = files_of(hub, f"{MODEL}@v1")
    for s in full.siblings:
        assert s.size == len(v1[s.rfilename])
        assert s.lfs.sha256 == hashlib.sha256(v1[s.rfilename]).hexdigest()


@pytest.mark.parametrize(
    "rev,want",
    [
        ("production", "v1"),
        ("release-3", "v2"),
        ("exp", "v3"),
        ("v1", "v1"),
        ("main", "v2"),
        ("main~1", "v1"),
    ],
)
def test_snapshot_download_by_alias_tag_branch_and_version(hub, cache, rev, want):
    path = snapshot_download(MODEL, revision=rev, cache_dir=cache, token=hub["tokens"]["read"])
    assert Path(path).name == hub["shas"][want]  # the snapshot folder is the commit sha
    assert tree_bytes(path) == files_of(hub, f"{MODEL}@{want}")


def test_a_sha_is_accepted_back_as_a_revision(hub, cache):
    sha = hub["shas"]["v1"]
    path = snapshot_download(MODEL, revision=sha, cache_dir=cache, token=hub["tokens"]["read"])
    assert tree_bytes(path) == files_of(hub, f"{MODEL}@v1")


def test_slash_revisions_and_odd_file_names(hub, cache):
    tok = hub["tokens"]["read"]
    for rev in ("refs/tags/release-3", "refs/heads/main"):
        got = hf_hub_download(MODEL, "sub/notes.txt", revision=rev, cache_dir=cache, token=tok)
        assert Path(got).read_text() == "notes of v2\n"
    got = hf_hub_download(
        MODEL, "dir with space/ü#file+1.txt", revision="v1", cache_dir=cache, token=tok
    )
    assert Path(got).read_text() == "odd name\n"
    # A client that does not percent-encode the slash: the longest revision that resolves.
    url = f"{hub['url']}/{MODEL}/resolve/refs/tags/release-3/sub/notes.txt"
    resp = httpx.get(url, headers={"Authorization": f"Bearer {tok}"})
    assert resp.status_code == 200 and resp.text == "notes of v2\n"


def test_allow_patterns_and_local_dir(hub, cache, tmp_path):
    tok = hub["tokens"]["read"]
    path = snapshot_download(
        MODEL, revision="v1", cache_dir=cache, allow_patterns=["*.json"], token=tok
    )
    assert list(tree_bytes(path)) == ["config.json"]
    local = tmp_path / "local"
    snapshot_download(MODEL, revision="v2", local_dir=local, token=tok)
    assert tree_bytes(local) == files_of(hub, f"{MODEL}@v2")


def test_tree_listing_recursive_and_subfolder(hub):
    api = HfApi(endpoint=hub["url"], token=hub["tokens"]["read"])
    assert sorted(api.list_repo_files(MODEL, revision="v1")) == sorted(files_of(hub, f"{MODEL}@v1"))
    top = {e.path for e in api.list_repo_tree(MODEL, revision="v1")}
    assert top == {"config.json", "model.safetensors", "sub", "dir with space"}
    sub = [e.path for e in api.list_repo_tree(MODEL, path_in_repo="sub", revision="v1")]
    assert sub == ["sub/notes.txt"]
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(MODEL, path_in_repo="nothing-here", revision="v1"))


def test_second_download_is_served_from_the_client_cache(hub, cache):
    tok = hub["tokens"]["read"]
    with Counter(hub["url"]) as proxy:
        first = snapshot_download(
            MODEL, revision="production", cache_dir=cache, token=tok, endpoint=proxy.url
        )
        cold = list(proxy.requests)
        proxy.requests.clear()
        second = snapshot_download(
            MODEL, revision="production", cache_dir=cache, token=tok, endpoint=proxy.url
        )
        warm = list(proxy.requests)
    assert first == second
    n_files = len(files_of(hub, f"{MODEL}@v1"))
    assert sum(1 for m, p in cold if m == "GET" and "/resolve/" in p) == n_files
    assert warm == [("GET", f"/api/models/{MODEL}/revision/production")]


def test_resolve_headers_range_and_etag(hub):
    tok = hub["tokens"]["read"]
    h = {"Authorization": f"Bearer {tok}"}
    body = files_of(hub, f"{MODEL}@v1")["model.safetensors"]
    url = f"{hub['url']}/{MODEL}/resolve/production/model.safetensors"
    head = httpx.head(url, headers=h)
    assert head.status_code == 200
    assert head.headers["x-repo-commit"] == hub["shas"]["v1"]
    assert head.headers["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert int(head.headers["content-length"]) == len(body)
    assert not any(k.lower().startswith("x-xet") for k in head.headers)
    assert httpx.get(url, headers=h).content == body
    for rng, want in (
        ("bytes=10-99", body[10:100]),
        ("bytes=100-", body[100:]),
        ("bytes=-7", body[-7:]),
    ):
        resp = httpx.get(url, headers={**h, "Range": rng})
        assert resp.status_code == 206 and resp.content == want, rng
        assert resp.headers["content-range"].endswith(f"/{len(body)}")
    assert httpx.get(url, headers={**h, "Range": f"bytes={len(body)}-"}).status_code == 416


def test_errors_are_the_clients_own_exceptions(hub, cache):
    url, tok = hub["url"], hub["tokens"]["read"]
    api = HfApi(endpoint=url, token=tok)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/absent")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(MODEL, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(MODEL, "config.json", revision="nope", cache_dir=cache, token=tok)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(MODEL, "ünïcode → absent", revision="v1", cache_dir=cache, token=tok)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(MODEL, "absent.bin", revision="v1", cache_dir=cache, token=tok)
    # The miss is cached as missing (X-Repo-Commit came with it).
    no_exist = Path(cache) / "models--acme--tiny" / ".no_exist" / hub["shas"]["v1"] / "absent.bin"
    assert no_exist.exists()


def test_private_model_and_wrong_token(hub, cache):
    url = hub["url"]
    acme = HfApi(endpoint=url, token=hub["tokens"]["acme"])
    assert acme.model_info(MODEL).id == MODEL
    with pytest.raises(RepositoryNotFoundError):  # a model the token may not read
        acme.model_info(PRIVATE)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(PRIVATE, "config.json", cache_dir=cache, token=hub["tokens"]["acme"])
    with pytest.raises(RepositoryNotFoundError):  # no token: as the Hub's private repo
        HfApi(endpoint=url, token=False).model_info(MODEL)
    with pytest.raises(HfHubHTTPError) as bad:
        HfApi(endpoint=url, token="tvc_" + "A" * 43).model_info(MODEL)
    assert bad.value.response.status_code == 401
    # Same answer for a model that exists and one that does not: no oracle.
    h = {"Authorization": f"Bearer {hub['tokens']['acme']}"}
    a = httpx.get(f"{url}/api/models/{PRIVATE}", headers=h)
    b = httpx.get(f"{url}/api/models/secret/absent", headers=h)
    assert (a.status_code, a.headers["x-error-code"]) == (b.status_code, b.headers["x-error-code"])


def test_hf_download_command(hub, tmp_path):
    hf_cli = Path(sys.executable).parent / "hf"
    env = {
        "HF_ENDPOINT": hub["url"],
        "HF_TOKEN": hub["tokens"]["read"],
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_DISABLE_XET": "1",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [
            str(hf_cli),
            "download",
            MODEL,
            "--revision",
            "production",
            "--local-dir",
            str(tmp_path / "dl"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert tree_bytes(tmp_path / "dl") == files_of(hub, f"{MODEL}@v1")
    bad = subprocess.run(
        [str(hf_cli), "download", MODEL, "--revision", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "evision" in bad.stdout + bad.stderr
