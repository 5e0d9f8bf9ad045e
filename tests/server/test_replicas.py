"""Several ``tvc server`` replicas on one PostgreSQL and one S3 bucket serve one registry:
whatever one accepts the other serves at once, and every invariant is kept by the database
(conditional updates, unique constraints) or by create-only object writes — never by a lock in
one process. Real parts: two server processes, SeaweedFS, PostgreSQL."""

from __future__ import annotations

import contextlib
import re
import threading

import httpx
import pytest

import tvc
from server_helpers import running_server, token
from tvc.errors import ConflictError
from tvc.remote import open_transport, sync

from repo_helpers import make_model_dir


@pytest.fixture
def cluster(tmp_path, s3_url, pg_url):
    """``{"urls": [A, B], "token": admin secret, ...}``: replica A on a registry made by
    ``tvc init --store --db``, replica B from a config dir ``tvc server --store --db`` makes."""
    from tvc.cli.main import main

    assert main(["init", str(tmp_path / "a"), "--store", s3_url, "--db", pg_url, "-q"]) == 0
    secret = token(tmp_path / "a", "admin", "admin")
    with contextlib.ExitStack() as stack:
        a, _pa = stack.enter_context(running_server(tmp_path / "a"))
        b, _pb = stack.enter_context(
            running_server(tmp_path / "b", "--store", s3_url, "--db", pg_url)
        )
        yield {"urls": [a, b], "token": secret, "dirs": [tmp_path / "a", tmp_path / "b"]}


def chain(tmp_path, n=2, name="src", model="m"):
    reg = tvc.Registry.init(tmp_path / name)
    for i in range(n):
        make_model_dir(tmp_path / "out", seed=1, changed=tuple(range(i)))
        reg.commit(model, [tmp_path / "out"], f"step {i}", detect_code=False)
    return reg


def test_b_is_a_config_dir_only(cluster):
    b = cluster["dirs"][1] / ".tvc"
    assert sorted(p.name for p in b.iterdir()) == ["config.toml", "tmp"]


def test_a_push_to_one_replica_is_cloned_from_the_other_at_once(tmp_path, cluster):
    a_url, b_url = cluster["urls"]
    src = chain(tmp_path, 3)
    with open_transport(a_url, cluster["token"]) as remote:
        sync.push(src, remote, ["m"])
    c = tvc.Registry.clone(b_url, tmp_path / "c", token=cluster["token"])
    assert [(v.id, v.number) for v in c.log("m")] == [(v.id, v.number) for v in src.log("m")]
    for v in src.log("m"):
        for fe in v.files:
            assert c.read(f"m@v{v.number}", fe.path) == src.read(f"m@v{v.number}", fe.path)
    for reg_dir in cluster["dirs"]:  # both config dirs see the one registry, fsck clean
        with tvc.Registry(reg_dir) as reg:
            res = reg.fsck(read_data=True)
            assert res["errors"] == [], res


def test_tokens_are_shared_created_and_revoked_through_either_replica(cluster):
    a_url, b_url = cluster["urls"]
    admin = {"Authorization": f"Bearer {cluster['token']}"}
    got = httpx.post(
        f"{b_url}/api/v1/tokens", json={"name": "ci", "scope": "read"}, headers=admin
    )
    assert got.status_code == 200, got.text
    ci = {"Authorization": f"Bearer {got.json()['token']}"}
    assert httpx.get(f"{a_url}/api/v1/whoami", headers=ci).status_code == 200
    assert httpx.delete(f"{a_url}/api/v1/tokens/ci", headers=admin).status_code == 200
    for url in (a_url, b_url):  # refused by both at the next request, no restart
        assert httpx.get(f"{url}/api/v1/whoami", headers=ci).status_code == 401
    # two creations of one name at once through both replicas: the DB lets exactly one in
    start = threading.Barrier(2)
    codes: list[int] = []

    def create(url: str) -> None:
        start.wait()
        r = httpx.post(f"{url}/api/v1/tokens", json={"name": "twin"}, headers=admin)
        codes.append(r.status_code)

    threads = [threading.Thread(target=create, args=(u,)) for u in (a_url, b_url)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(codes) == [200, 409]


def test_two_pushes_to_one_branch_through_two_replicas_exactly_one_wins(tmp_path, cluster):
    a_url, b_url = cluster["urls"]
    secret = cluster["token"]
    src = chain(tmp_path, 1)
    with open_transport(a_url, secret) as remote:
        sync.push(src, remote, ["m"])
    clones = [tvc.Registry.clone(a_url, tmp_path / f"c{i}", token=secret) for i in range(2)]
    for i, c in enumerate(clones):
        make_model_dir(tmp_path / f"out{i}", seed=20 + i)
        c.commit("m", [tmp_path / f"out{i}"], f"clone {i}", detect_code=False)
    start = threading.Barrier(2)
    outcome: list[object] = [None, None]

    def go(i: int) -> None:
        with open_transport((a_url, b_url)[i], secret) as remote:
            start.wait()
            try:
                outcome[i] = sync.push(clones[i], remote, ["m"])
            except ConflictError as exc:
                outcome[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    won = [i for i in range(2) if isinstance(outcome[i], sync.Transfer)]
    assert len(won) == 1, outcome
    lost = outcome[1 - won[0]]
    assert isinstance(lost, ConflictError) and re.search("moved meanwhile|pull", str(lost))
    with tvc.Registry(cluster["dirs"][1]) as srv:
        assert srv.resolve("m@main").id == clones[won[0]].resolve("m@main").id


def test_numbering_stays_dense_and_unique_under_concurrent_pushes(tmp_path, cluster):
    """Eight clients push a new version each, on a branch of their own, through alternating
    replicas at once: every version gets one number, none twice, none skipped."""
    urls, secret = cluster["urls"], cluster["token"]
    src = chain(tmp_path, 1)
    with open_transport(urls[0], secret) as remote:
        sync.push(src, remote, ["m"])
    n = 8
    clones = [tvc.Registry.clone(urls[0], tmp_path / f"c{i}", token=secret) for i in range(n)]
    for i, c in enumerate(clones):
        make_model_dir(tmp_path / f"out{i}", seed=40 + i, n_layers=2, width=16)
        c.commit("m", [tmp_path / f"out{i}"], f"client {i}", branch=f"b{i}", detect_code=False)
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            with open_transport(urls[i % 2], secret) as remote:
                start.wait()
                sync.push(clones[i], remote, [f"m@b{i}"])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with tvc.Registry(cluster["dirs"][0]) as srv:
        heads = {i: srv.resolve(f"m@b{i}") for i in range(n)}
        assert sorted(v.number for v in heads.values()) == list(range(2, n + 2))
        assert {v.id for v in heads.values()} == {c.resolve(f"m@b{i}").id for i, c in enumerate(clones)}
