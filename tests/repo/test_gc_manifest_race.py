"""gc and a version being recorded race for one manifest (PostgreSQL: writers run at once).

gc finds a manifest no version uses; before it deletes it, a writer records a version that
uses it (a push of a model with the same file). One of them must wait for the other: gc must
neither fail on the foreign key nor delete a manifest a committed version uses. Found by the
replica test (gc in a loop beside pushes), which failed so once in a fresh-clone `make test`;
here the interleaving is forced: the writer holds its transaction open until gc is seen waiting.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

import tvc
from tvc.repo import schema as s


def _waiting_for_a_lock(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        q = sa.text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return conn.execute(q).scalar() > 0


def test_gc_waits_for_a_writer_that_uses_a_manifest_it_found_unused(tmp_path, pg_url):
    reg = tvc.Registry.init(tmp_path / "reg", metadata=pg_url)
    try:
        for name in ("gone", "keep"):
            d = tmp_path / name
            d.mkdir()
            (d / "w.txt").write_text(f"weights of {name}")
            reg.commit(name, [d], name, detect_code=False)
        fe = reg.resolve("gone@main").files[0]
        manifest = reg.manifest(fe.manifest_id)
        keep = reg.resolve("keep@main")
        reg.rm_model("gone", force=True, reason="its manifest is now unused")

        holding, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []
        reports: list[dict] = []

        def writer() -> None:  # what recording a version with this file does
            try:
                with reg.meta.write() as conn:
                    # No chunk claimed: gc goes through its chunk phase without waiting (in
                    # the replica test they were live in other versions) and meets the
                    # writer at the manifest, where the race is.
                    reg.meta.keep_manifests(conn, [manifest])
                    conn.execute(
                        s.version_files.insert().values(
                            version_id=keep.id,
                            path="also.txt",
                            manifest_id=fe.manifest_id,
                            size=fe.size,
                            digest=fe.digest,
                            format=fe.format,
                        )
                    )
                    holding.set()
                    release.wait(60)
            except BaseException as exc:
                errors.append(exc)
                holding.set()

        def collector() -> None:
            try:
                reports.append(reg.gc(grace=0))
            except BaseException as exc:
                errors.append(exc)

        w = threading.Thread(target=writer)
        w.start()
        assert holding.wait(60) and not errors
        g = threading.Thread(target=collector)
        g.start()
        deadline = time.monotonic() + 60
        while not _waiting_for_a_lock(reg.engine) and g.is_alive():
            assert time.monotonic() < deadline, "gc never waited for the writer"
            time.sleep(0.02)
        release.set()
        w.join(60)
        g.join(60)
        assert errors == []
        assert reports and reports[0]["manifests_removed"] == 0
        with reg.engine.connect() as conn:
            q = sa.select(s.manifests.c.id).where(s.manifests.c.id == fe.manifest_id)
            assert conn.execute(q).scalar() == fe.manifest_id
    finally:
        reg.close()
