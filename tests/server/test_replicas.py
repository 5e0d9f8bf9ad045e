"""Several ``tvc server`` replicas on one PostgreSQL and one S3 bucket serve one registry:
whatever one accepts the other serves at once, and every invariant is kept by the database
(conditional updates, unique constraints) or by create-only object writes — never by a lock in
one process. Real parts: two server processes, SeaweedFS, PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import re
import threading

import httpx
import pytest

import tvc
from server_helpers import running_server, token
from tvc.errors import ConflictError
from tvc.remote import open_transport, sync

from repo_helpers import make_model_dir


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, _seaweed, _postgres):
    """``{"urls": [A, B], "token": admin secret, "dirs": [...]}``: replica A on a registry made
    by ``tvc init --store --db``, replica B from the config dir ``tvc server --store --db``
    makes. One per module (starting servers is the slow part); tests use models of their own."""
    import uuid

    import sqlalchemy as sa

    from s3_helpers import S3_BUCKET, S3_KEYS
    from tvc.cli.main import main

    root = tmp_path_factory.mktemp("cluster")
    s3_url = f"s3://{S3_BUCKET}/c-{uuid.uuid4().hex[:12]}?endpoint={_seaweed}"
    name = "cluster_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(_postgres.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    pg_url = _postgres.format(db=name)
    with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as stack:
        for k, v in {
            **S3_KEYS,
            "AWS_CONFIG_FILE": str(root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "TVC_AUTHOR": "tester",
        }.items():
            mp.setenv(k, v)
        assert main(["init", str(root / "a"), "--store", s3_url, "--db", pg_url, "-q"]) == 0
        secret = token(root / "a", "admin", "admin")
        a, _pa = stack.enter_context(running_server(root / "a"))
        b, _pb = stack.enter_context(running_server(root / "b", "--store", s3_url, "--db", pg_url))
        yield {"urls": [a, b], "token": secret, "dirs": [root / "a", root / "b"]}
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(autouse=True)
def _aws(s3_env):
    """Tests open the cluster's registry directly too: the same AWS environment."""


def chain(tmp_path, n=2, model="m", name="src"):
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
    src = chain(tmp_path, 3, "m1")
    with open_transport(a_url, cluster["token"]) as remote:
        sync.push(src, remote, ["m1"])
    c = tvc.Registry.clone(b_url, tmp_path / "c", token=cluster["token"], models=["m1"])
    assert [(v.id, v.number) for v in c.log("m1")] == [(v.id, v.number) for v in src.log("m1")]
    for v in src.log("m1"):
        for fe in v.files:
            assert c.read(f"m1@v{v.number}", fe.path) == src.read(f"m1@v{v.number}", fe.path)
    for reg_dir in cluster["dirs"]:  # both config dirs see the one registry, fsck clean
        with tvc.Registry(reg_dir) as reg:
            res = reg.fsck(read_data=True)
            assert res["errors"] == [], res


def test_tokens_are_shared_created_and_revoked_through_either_replica(cluster):
    a_url, b_url = cluster["urls"]
    admin = {"Authorization": f"Bearer {cluster['token']}"}
    got = httpx.post(f"{b_url}/api/v1/tokens", json={"name": "ci", "scope": "read"}, headers=admin)
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
    src = chain(tmp_path, 1, "m2")
    with open_transport(a_url, secret) as remote:
        sync.push(src, remote, ["m2"])
    clones = [
        tvc.Registry.clone(a_url, tmp_path / f"c{i}", token=secret, models=["m2"]) for i in range(2)
    ]
    for i, c in enumerate(clones):
        make_model_dir(tmp_path / f"out{i}", seed=20 + i)
        c.commit("m2", [tmp_path / f"out{i}"], f"clone {i}", detect_code=False)
    start = threading.Barrier(2)
    outcome: list[object] = [None, None]

    def go(i: int) -> None:
        with open_transport((a_url, b_url)[i], secret) as remote:
            start.wait()
            try:
                outcome[i] = sync.push(clones[i], remote, ["m2"])
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
        assert srv.resolve("m2@main").id == clones[won[0]].resolve("m2@main").id


def test_numbering_stays_dense_and_unique_under_concurrent_pushes(tmp_path, cluster):
    """Eight clients push a new version each, on a branch of their own, through alternating
    replicas at once: every version gets one number, none twice, none skipped."""
    urls, secret = cluster["urls"], cluster["token"]
    src = chain(tmp_path, 1, "m3")
    with open_transport(urls[0], secret) as remote:
        sync.push(src, remote, ["m3"])
    n = 8
    clones = [
        tvc.Registry.clone(urls[0], tmp_path / f"c{i}", token=secret, models=["m3"])
        for i in range(n)
    ]
    for i, c in enumerate(clones):
        make_model_dir(tmp_path / f"out{i}", seed=40 + i, n_layers=2, width=16)
        c.commit("m3", [tmp_path / f"out{i}"], f"client {i}", branch=f"b{i}", detect_code=False)
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            with open_transport(urls[i % 2], secret) as remote:
                start.wait()
                sync.push(clones[i], remote, [f"m3@b{i}"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with tvc.Registry(cluster["dirs"][0]) as srv:
        heads = {i: srv.resolve(f"m3@b{i}") for i in range(n)}
        assert sorted(v.number for v in heads.values()) == list(range(2, n + 2))
        assert {v.id for v in heads.values()} == {
            c.resolve(f"m3@b{i}").id for i, c in enumerate(clones)
        }


def test_gc_in_a_loop_beside_pushes_through_two_replicas_loses_nothing(tmp_path, cluster):
    """The shared-storage gc race. Workers push a new version of their model each round
    through alternating replicas; each round also pushes, then removes, a throw-away model
    holding exactly the chunks the *next* round will reuse — so the next push finds them on
    the server (not sent) while gc, looping with no grace period from a third process, is
    busy marking and sweeping them. Afterwards ``fsck --read-data`` is clean and every
    acknowledged version is bit-exact."""
    urls, secret = cluster["urls"], cluster["token"]
    workers, rounds = 3, 4
    done = threading.Event()
    acked: list[tuple[str, str, bytes]] = []
    failures: list[BaseException] = []
    gc_runs: list[dict] = []

    def gc_loop() -> None:
        with tvc.Registry(cluster["dirs"][0]) as srv:
            while not done.is_set():
                try:
                    gc_runs.append(srv.gc(grace=0))
                except BaseException as exc:
                    failures.append(exc)
                    return

    def push(reg, url, model) -> None:
        # Objects swept between the server's "I have these" and the record are sent again
        # by sync.push itself (record.RESEND): no retry here.
        with open_transport(url, secret) as remote:
            sync.push(reg, remote, [model])

    def work(i: int) -> None:
        try:
            reg = tvc.Registry(tmp_path / f"w{i}")
            srv = tvc.Registry(cluster["dirs"][1])
            for r in range(rounds):
                url = urls[(i + r) % 2]
                out = tmp_path / f"out{i}-{r}"
                make_model_dir(out, seed=60 + i, n_layers=3, width=48, scale=1 + r / 8)
                v = reg.commit(f"w{i}", [out], f"round {r}", detect_code=False).version
                push(reg, url, f"w{i}")
                acked.append((f"w{i}", v.id, (out / "model.safetensors").read_bytes()))
                nxt = tmp_path / f"next{i}-{r}"
                make_model_dir(nxt, seed=60 + i, n_layers=3, width=48, scale=1 + (r + 1) / 8)
                reg.commit(f"t{i}-{r}", [nxt], "to be removed", detect_code=False)
                push(reg, url, f"t{i}-{r}")
                srv.rm_model(f"t{i}-{r}", force=True, reason="garbage for gc")
            srv.close()
            reg.close()
        except BaseException as exc:
            failures.append(exc)

    for i in range(workers):  # Alembic's migrations are not thread-safe: made beforehand
        tvc.Registry.init(tmp_path / f"w{i}").close()
    gc_thread = threading.Thread(target=gc_loop)
    gc_thread.start()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    gc_thread.join()
    import traceback

    import sqlalchemy as sa

    from tvc.store import index as idx

    for f in failures:
        traceback.print_exception(f)
    if failures:
        with tvc.Registry(cluster["dirs"][0]) as srv, srv.meta.read() as conn:
            for row in conn.execute(sa.select(idx.packs).where(idx.packs.c.retired.is_not(None))):
                n = conn.execute(
                    sa.select(sa.func.count()).where(idx.chunks.c.pack_id == row.id)
                ).scalar()
                print("RETIRED", row, n, srv.store.backend.exists(row.name))
    assert failures == []
    assert len(acked) == workers * rounds
    assert len(gc_runs) >= 1
    with tvc.Registry(cluster["dirs"][0]) as srv:
        final = srv.gc(grace=0)
        res = srv.fsck(read_data=True)
        assert res["errors"] == [], res
        for model, vid, data in acked:
            assert srv.read(srv.version(vid), "model.safetensors") == data, (model, vid)
        freed = sum(g["chunks_removed"] for g in [*gc_runs, final])
    assert freed > 0  # gc did reclaim the throw-away models meanwhile


def test_alias_moves_and_lifecycle_stay_consistent_through_two_replicas(tmp_path, cluster):
    """Concurrent alias moves and state transitions through both replicas: the audit is one
    unbroken chain (every move starts where the one before ended: no update lost to a race
    between processes) that ends where the ref and the state are, and a transition that two
    clients race for happens once."""
    a_url, b_url = cluster["urls"]
    src = chain(tmp_path, 4, "al")
    with open_transport(a_url, cluster["token"]) as remote:
        sync.push(src, remote, ["al"])
    h = {"Authorization": f"Bearer {cluster['token']}"}
    start = threading.Barrier(12)
    codes: list[int] = []

    def move(i: int) -> None:
        url = (a_url, b_url)[i % 2]
        start.wait()
        for k in range(3):
            target = f"v{1 + (i + k) % 4}"
            r = httpx.post(
                f"{url}/api/v1/aliases/set",
                json={"model": "al", "alias": "canary", "ref": target},
                headers=h,
                timeout=60,
            )
            codes.append(r.status_code)
        # every client tries the same first transition of v2: exactly one may make it
        r = httpx.post(
            f"{url}/api/v1/lifecycle/set",
            json={"ref": "al@v2", "state": "training"},
            headers=h,
            timeout=60,
        )
        codes.append(r.status_code)

    threads = [threading.Thread(target=move, args=(i,)) for i in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert set(codes) <= {200, 409}, codes
    with tvc.Registry(cluster["dirs"][0]) as reg:
        moves = reg.alias_history("al", "canary")
        assert moves, "no move was recorded"
        assert moves[0].old is None
        for before, after in itertools.pairwise(moves):
            assert after.old == before.new, (before, after)
        assert {r["alias"]: r["ref"] for r in reg.aliases("al")}["canary"] == moves[-1].new
        states = reg.state_history("al@v2")
        assert [(e.old, e.new) for e in states] == [("created", "training")]
        assert reg.show("al@v2").state == "training"
