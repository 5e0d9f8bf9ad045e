from __future__ import annotations

import numpy as np
import pytest

from tvc.errors import IntegrityError, StorageError
from tvc.repo import db
from tvc.store import hashing
from tvc.store.backends import LocalBackend, MemoryBackend
from tvc.store.chunkstore import MAX_DELTA_DEPTH, ChunkStore, PutItem

from faults import BitFlipBackend, FailingBackend


@pytest.fixture
def engine(tmp_path):
    eng = db.create_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    db.migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture(params=["local", "memory", "s3"])
def inner(request, tmp_path):
    """The backend the fault-injection wrappers wrap: each kind (S3: a real SeaweedFS)."""
    if request.param == "local":
        yield LocalBackend(tmp_path / "objects")
    elif request.param == "memory":
        yield MemoryBackend()
    else:
        from tvc.store.backends import open_backend

        b = open_backend(request.getfixturevalue("s3_url"))
        yield b
        b.close()


def make_store(engine, tmp_path, backend=None):
    return ChunkStore(backend or LocalBackend(tmp_path / "objects"), engine, tmp_path / "tmp")


def commit(store, items):
    s = store.session()
    results = list(s.put_many(items))
    with store.engine.begin() as conn:
        s.index_into(conn)
    return results


def floats(seed, n=4096):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32).tobytes()


def test_put_read_roundtrip_and_dedup(engine, tmp_path):
    store = make_store(engine, tmp_path)
    data = [floats(1), floats(2), b"opaque bytes" * 100]
    res = commit(store, [PutItem(d, "F32", 4) for d in data[:2]] + [PutItem(data[2])])
    assert [r.id for r in res] == [hashing.digest(d) for d in data]
    assert all(r.new for r in res)
    assert list(store.read_many([r.id for r in res])) == data
    again = commit(store, [PutItem(d) for d in data])
    assert not any(r.new for r in again)
    assert sum(r.stored_len for r in again) == 0


def test_duplicates_within_one_session_stored_once(engine, tmp_path):
    store = make_store(engine, tmp_path)
    res = commit(store, [PutItem(b"x" * 1000)] * 5)
    assert sum(r.new for r in res) == 1


def test_delta_chain_is_bounded(engine, tmp_path):
    store = make_store(engine, tmp_path)
    rng = np.random.default_rng(0)
    arr = rng.standard_normal(1 << 14).astype(np.float32)
    prev = None
    ids = []
    for _step in range(3 * MAX_DELTA_DEPTH):
        arr = arr + rng.standard_normal(arr.size).astype(np.float32) * 1e-4
        (r,) = commit(store, [PutItem(arr.tobytes(), "F32", 4, base=prev)])
        ids.append((r.id, arr.tobytes()))
        prev = r.id
    infos = [store.info(cid) for cid, _ in ids]
    assert max(i.depth for i in infos) <= MAX_DELTA_DEPTH
    assert any(i.depth > 0 for i in infos), "fine-tune steps should delta-encode"
    # Every delta is coded against a full chunk (the keyframe), never against another delta.
    for info in infos:
        if info.base is not None:
            assert info.depth == 1 and store.info(info.base).base is None
    for cid, raw in ids:
        assert store.read(cid) == raw


def test_delta_against_an_old_deep_chain_uses_its_keyframe(engine, tmp_path):
    """Chains written with deeper deltas still read, and new deltas skip to their root."""
    store = make_store(engine, tmp_path)
    arr = np.random.default_rng(1).standard_normal(1 << 12).astype(np.float32)
    (root,) = commit(store, [PutItem(arr.tobytes(), "F32", 4)])
    step = arr + np.float32(1e-4)
    (mid,) = commit(store, [PutItem(step.tobytes(), "F32", 4, base=root.id)])
    assert store.info(mid.id).base == root.id
    nxt = step + np.float32(1e-4)
    (last,) = commit(store, [PutItem(nxt.tobytes(), "F32", 4, base=mid.id)])
    assert store.info(last.id).base == root.id and store.info(last.id).depth == 1
    assert bytes(store.read(last.id)) == nxt.tobytes()


def test_bit_flip_is_caught_on_read(engine, tmp_path, inner):
    store = make_store(engine, tmp_path, inner)
    (r,) = commit(store, [PutItem(floats(3), "F32", 4)])
    flipped = make_store(engine, tmp_path, BitFlipBackend(inner, 7))
    with pytest.raises(IntegrityError, match=r.id[:16]):
        flipped.read(r.id)


class _FlipPack(BitFlipBackend):
    """Flips a byte only in reads of one pack."""

    def __init__(self, inner, pack, at):
        super().__init__(inner, at)
        self.pack = pack

    def _get(self, name, offset, length):
        if name != self.pack:
            return self.inner._get(name, offset, length)
        return super()._get(name, offset, length)


def test_a_damaged_delta_base_fails_the_delta_read(engine, tmp_path, inner):
    """Bases are decoded without a hash of their own: the delta's hash must catch them."""
    store = make_store(engine, tmp_path, inner)
    arr = np.random.default_rng(2).standard_normal(1 << 14).astype(np.float32)
    (base,) = commit(store, [PutItem(arr.tobytes(), "F32", 4)])
    nxt = arr + np.float32(1e-3)
    (delta,) = commit(store, [PutItem(nxt.tobytes(), "F32", 4, base=base.id)])
    assert store.info(delta.id).base == base.id
    pack = store.info(base.id).pack
    assert store.info(delta.id).pack != pack
    # Past the entry header: the payload itself, which still decodes, to the wrong floats.
    damaged = make_store(engine, tmp_path, _FlipPack(inner, pack, 4000))
    with pytest.raises(IntegrityError, match=delta.id[:16]):
        damaged.read(delta.id)
    with pytest.raises(IntegrityError, match=base.id[:16]):
        damaged.read(base.id)
    assert bytes(store.read(delta.id)) == nxt.tobytes()


def test_failed_pack_write_leaves_nothing_indexed(engine, tmp_path, inner):
    store = make_store(engine, tmp_path, FailingBackend(inner, put="E"))
    s = store.session()
    list(s.put_many([PutItem(b"abc" * 100)]))
    with pytest.raises(StorageError):
        s.flush()
    s.abort()
    assert list(inner.list()) == []
    assert not store.has(hashing.digest(b"abc" * 100))
    assert list((tmp_path / "tmp").glob("*")) == []


def test_abort_removes_written_packs(engine, tmp_path, inner):
    backend = inner
    store = make_store(engine, tmp_path, backend)
    s = store.session()
    list(s.put_many([PutItem(b"abc" * 100)]))
    s.flush()
    assert list(backend.list("packs/"))
    s.abort()
    assert list(backend.list("packs/")) == []


def test_prefetched_bases_need_no_query_per_chunk(engine, tmp_path, monkeypatch):
    """After ``prefetch``, unchanged pieces and delta bases are found without the index."""
    store = make_store(engine, tmp_path)
    rng = np.random.default_rng(3)
    base = [rng.standard_normal(1 << 12).astype(np.float32) for _ in range(4)]
    first = commit(store, [PutItem(a.tobytes(), "F32", 4) for a in base])
    calls = []
    real_info = store.info
    monkeypatch.setattr(store, "info", lambda cid: calls.append(("info", cid)) or real_info(cid))
    session = store.session()
    session.prefetch(r.id for r in first)
    # piece 0 unchanged, pieces 1-3 fine-tuned: deltas against the prefetched rows
    new = [base[0]] + [a + np.float32(1e-3) for a in base[1:]]
    items = [PutItem(a.tobytes(), "F32", 4, base=r.id) for a, r in zip(new, first, strict=True)]
    results = list(session.put_many(items))
    with store.engine.begin() as conn:
        session.index_into(conn)
    # only the three new chunks are looked up
    assert sorted(cid for _k, cid in calls) == sorted(r.id for r in results[1:])
    assert not results[0].new and all(r.delta for r in results[1:])


# ---------------------------------------------------------------------------------------------
# the shared worker threads


def test_ordered_map_keeps_order_and_reuses_its_threads():
    import threading
    import time

    from tvc.store import chunkstore
    from tvc.store.chunkstore import ordered_map

    def slow_first(i: int) -> tuple[int, threading.Thread]:
        time.sleep(0.02 if i % 7 == 0 else 0)  # later items finish first
        return i, threading.current_thread()

    first = list(ordered_map(slow_first, range(50), 2))
    pool = chunkstore._pool
    again = list(ordered_map(slow_first, range(50), 2))
    assert [i for i, _t in first] == list(range(50)) == [i for i, _t in again]
    assert chunkstore._pool is pool
    ran = {t for _i, t in first + again}
    assert all(t.name.startswith("tvc-worker") and t.is_alive() for t in ran)
    # The same threads serve both calls (their scratch buffers stay); a pool may still start
    # a thread it had not needed yet, so only the overlap is certain.
    assert {t for _i, t in first} & {t for _i, t in again}


def test_ordered_map_inside_a_task_runs_in_line():
    """A task that maps again must not wait for the pool it is part of (that would deadlock
    once every worker did)."""
    from concurrent.futures import ThreadPoolExecutor

    from tvc.store.chunkstore import ordered_map

    def outer(i: int) -> list[int]:
        return list(ordered_map(lambda j: i * 10 + j, range(5), 2))

    with ThreadPoolExecutor(1) as guard:  # a deadlock fails the test instead of hanging it
        got = guard.submit(lambda: list(ordered_map(outer, range(6), 2))).result(timeout=30)
    assert got == [[i * 10 + j for j in range(5)] for i in range(6)]


def test_ordered_map_raises_a_task_error_and_leaves_nothing_running():
    import threading
    import time

    from tvc.store.chunkstore import ordered_map

    running = threading.Semaphore(0)
    done: list[int] = []

    def task(i: int) -> int:
        if i == 3:
            raise ValueError("bad piece")
        running.release()
        time.sleep(0.01)
        done.append(i)
        return i

    started = 0
    with pytest.raises(ValueError, match="bad piece"):
        for _ in ordered_map(task, range(100), 2):
            pass
    while running.acquire(blocking=False):
        started += 1
    assert sorted(done) == sorted(set(done)) and len(done) == started  # all ended, none after

    gen = ordered_map(task, range(4, 100), 2)
    next(gen)
    gen.close()  # a caller that stops early
    snapshot = len(done)
    time.sleep(0.05)
    assert len(done) == snapshot


def test_a_forked_child_gets_its_own_worker_threads():
    import os

    from tvc.store.chunkstore import ordered_map

    assert list(ordered_map(lambda i: i * 2, range(10), 2)) == list(range(0, 20, 2))  # in use
    pid = os.fork()
    if pid == 0:  # the parent's threads do not exist here
        ok = list(ordered_map(lambda i: i + 1, range(40), 2)) == list(range(1, 41))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_larger_pool_does_not_break_a_map_still_running_on_the_old_one():
    from tvc.store import chunkstore
    from tvc.store.chunkstore import ordered_map

    size = chunkstore._pool_size or chunkstore.default_workers()
    running = ordered_map(lambda i: i, range(200), max(size, 2))
    assert next(running) == 0
    assert list(ordered_map(lambda i: -i, range(50), max(size, 2) + 1)) == [-i for i in range(50)]
    assert chunkstore._pool_size == max(size, 2) + 1
    assert list(running) == list(range(1, 200))  # its pool was replaced, not shut down
