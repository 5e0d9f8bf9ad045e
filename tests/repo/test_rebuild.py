"""The store holds the truth: the metadata DB can be lost, damaged or restored from an older
backup, and `tvc fsck --rebuild-index` rebuilds it from the packs and the journal."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import tvc
from tvc.errors import IntegrityError
from tvc.repo.files import NoProgress

from repo_helpers import make_model_dir


def _state(reg: tvc.Registry) -> dict:
    """What a user sees of the registry, to compare before and after a rebuild."""
    out = {}
    for m in reg.models():
        name = m["model"]
        out[name] = {
            "log": [(v.number, v.id, v.state, v.metrics, v.parents) for v in reg.log(name)]
            if m["versions"]
            else [],
            "refs": reg.refs_of(name),
            "aliases": [(a["alias"], a["id"]) for a in reg.aliases(name)],
            "audit": [
                (e["kind"], e["name"], e["from"], e["to"], e["actor"], e["reason"])
                for e in reg.audit(name)
            ],
        }
    return out


@pytest.fixture
def populated(tmp_path):
    reg = tvc.Registry.init(tmp_path / "reg")
    files = {}
    for k in range(3):
        d = tmp_path / f"in{k}"
        make_model_dir(d, seed=1, n_layers=4, width=128, changed=(k,))
        files[k] = (d / "model.safetensors").read_bytes()
        reg.commit("m", [d], f"v{k + 1}", metrics={"acc": 0.5 + k / 10})
    reg.branch("m", "exp", "v1")
    reg.commit("m", [tmp_path / "in2"], "on exp", branch="exp")
    reg.tag("m", "release", "v2")
    reg.alias("m", "production", "v2")
    reg.alias("m", "production", "v3")
    reg.rollback("m", "production")
    reg.set_state("m@v2", "training")
    reg.add_metrics("m@v3", {"test_acc": 0.8}, reason="eval")
    reg.commit("other", [tmp_path / "in0"], "copy")
    reg.rm("other@v1")
    yield reg, files
    reg.close()


def _check_versions(reg, files):
    for v in reg.log("m") + reg.log("m@exp"):
        k = int(v.message[1]) - 1 if v.message.startswith("v") else 2
        assert reg.read(v, "model.safetensors") == files[k]
    assert reg.fsck(read_data=True)["ok"]


def test_a_missing_db_is_an_error_not_a_fresh_start_and_rebuilds(populated):
    reg, files = populated
    before = _state(reg)
    reg.close()
    (reg.dir / "tvc.db").unlink()
    with pytest.raises(IntegrityError, match="rebuild-index"):
        tvc.Registry(reg.root)
    r = subprocess.run(
        [sys.executable, "-m", "tvc", "-R", str(reg.root), "log", "m"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 8 and "rebuild-index" in r.stderr and "Traceback" not in r.stderr
    report = tvc.Registry.rebuild_index(reg.root)
    assert report["recovered"] == [] and report["renumbered"] == []
    with tvc.Registry(reg.root) as again:
        assert _state(again) == before
        _check_versions(again, files)
        again.commit("m", [reg.root.parent / "in0"], "after the rebuild")
        assert again.resolve("m").number == 5  # numbering goes on


def test_an_empty_or_truncated_db_is_an_error_and_rebuilds(populated):
    reg, files = populated
    before = _state(reg)
    reg.close()
    db = reg.dir / "tvc.db"
    for p in reg.dir.glob("tvc.db-*"):
        p.unlink()
    db.write_bytes(b"")
    with pytest.raises(IntegrityError, match="empty"):
        tvc.Registry(reg.root)
    db.write_bytes(b"SQLite format 3\x00" + b"\x01" * 200)  # damaged: not a database
    with pytest.raises(IntegrityError, match="rebuild-index"):
        tvc.Registry(reg.root).log("m")
    tvc.Registry.rebuild_index(reg.root)
    with tvc.Registry(reg.root) as again:
        assert _state(again) == before
        _check_versions(again, files)


def test_an_older_db_backup_is_detected_and_never_garbage_collected(populated, tmp_path):
    reg, files = populated
    reg.close()
    backup = tmp_path / "backup.db"
    with tvc.Registry(reg.root) as r:
        r.meta.engine.dispose()
    shutil.copy(reg.dir / "tvc.db", backup)
    with tvc.Registry(reg.root) as r:  # work that the backup will not know
        d = tmp_path / "late"
        make_model_dir(d, seed=9, n_layers=2, width=64)
        late = r.commit("late", [d], "after the backup")
        late_bytes = (d / "model.safetensors").read_bytes()
        r.alias("m", "staging", "v1")
        before = _state(r)
    for p in reg.dir.glob("tvc.db*"):
        p.unlink()
    shutil.copy(backup, reg.dir / "tvc.db")  # "restore the backup"
    with tvc.Registry(reg.root) as old:
        res = old.fsck()
        assert not res["ok"] and any("rebuild-index" in e for e in res["errors"])
        with pytest.raises(IntegrityError, match="rebuild-index"):
            old.gc(grace=0)
    tvc.Registry.rebuild_index(reg.root)
    with tvc.Registry(reg.root) as again:
        assert _state(again) == before
        assert again.read(f"late@{late.id[:12]}", "model.safetensors") == late_bytes
        _check_versions(again, files)


def test_a_commit_killed_before_its_transaction_is_recovered_not_lost(populated, tmp_path):
    """A version record whose commit never reached the DB (the DB lost too): a rebuild keeps
    it, on no branch, as recovered."""
    reg, _files = populated
    d = tmp_path / "x"
    make_model_dir(d, seed=5, n_layers=2, width=64)
    session = reg.store.session()
    from tvc.repo.files import delta_pieces, stage, store_files
    from tvc.repo.version import version_record
    from tvc.store.packs import Kind

    entries, _n, _t = store_files(stage([d]), delta_pieces([], reg.manifest), session, NoProgress())
    for _fe, m in entries:
        session.put_record(Kind.MANIFEST, m.canonical())
    record = version_record(
        model="m",
        parents=[],
        files=[fe for fe, _m in entries],
        message="orphan",
        author="t",
        created=1.0,
        params={},
        metrics={},
        datasets={},
        code=None,
        base=None,
    )
    session.put_record(Kind.VERSION, record)
    session.flush()  # packs durable, never indexed: the process "dies" here
    reg.close()
    (reg.dir / "tvc.db").unlink()
    report = tvc.Registry.rebuild_index(reg.root)
    assert len(report["recovered"]) == 1 and report["recovered"][0].startswith("m@v5")
    with tvc.Registry(reg.root) as again:
        v = again.resolve("m@v5")
        assert v.message == "orphan"
        assert again.read(v, "model.safetensors") == (d / "model.safetensors").read_bytes()


def test_a_registry_made_before_the_journal_is_backfilled_and_rebuilds_whole(populated):
    """Schema 0002 kept versions only in the DB: opening it upgrades it and puts its records
    and a baseline of its state into the store, so a rebuild loses nothing."""
    reg, files = populated
    before = _state(reg)
    reg.close()
    # Make it look like a registry of the previous schema: no records, no journal.
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from tvc.repo import db

    engine = sa.create_engine(f"sqlite:///{reg.dir / 'tvc.db'}")  # foreign keys off: batch
    cfg = Config()
    cfg.set_main_option("script_location", str(db._MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    engine.dispose()
    shutil.rmtree(reg.dir / "objects" / "journal")
    for pack in (reg.dir / "objects" / "packs").rglob("*.pack"):
        pack.unlink()  # (records and chunks alike: the chunks come back from the files below)
    with tvc.Registry(reg.root):
        pass  # the upgrade: records and a baseline event written
    with tvc.Registry(reg.root) as r:  # chunks back by committing the same files again
        for k in range(3):
            r.commit("scratch", [reg.root.parent / f"in{k}"], "refill")
        r.rm_model("scratch")
    (reg.dir / "tvc.db").unlink()
    report = tvc.Registry.rebuild_index(reg.root)
    assert report["recovered"] == []
    with tvc.Registry(reg.root) as again:
        state = _state(again)
        assert state["m"] == before["m"]
        _check_versions(again, files)


def test_gc_never_deletes_an_unindexed_pack_that_holds_a_version(populated, tmp_path):
    reg, _files = populated
    d = tmp_path / "x"
    make_model_dir(d, seed=6, n_layers=2, width=64)
    session = reg.store.session()
    from tvc.repo.files import delta_pieces, stage, store_files
    from tvc.repo.version import version_record
    from tvc.store.packs import Kind

    entries, _n, _t = store_files(stage([d]), delta_pieces([], reg.manifest), session, NoProgress())
    for _fe, m in entries:
        session.put_record(Kind.MANIFEST, m.canonical())
    record = version_record(
        model="m", parents=[], files=[fe for fe, _m in entries], message="orphan",
        author="t", created=2.0, params={}, metrics={}, datasets={}, code=None, base=None,
    )  # fmt: skip
    session.put_record(Kind.VERSION, record)
    session.flush()
    session._drop_lease()  # the process died: its lease is gone
    report = reg.gc(grace=0)
    assert report.get("kept_unindexed") == 1
    assert any(name == session.packs[-1][0] for name in reg.store.backend.list("packs/"))


def test_versions_brought_by_fetch_keep_their_numbers_through_a_rebuild(populated, tmp_path):
    reg, _files = populated
    clone = tvc.Registry.clone(reg.root, tmp_path / "clone")
    reg.commit("m", [tmp_path / "in1"], "after the clone")
    clone.fetch()  # versions recorded on no branch ("fetched" events)
    before = {v.id: v.number for v in clone.search("model = m")}
    clone.close()
    (clone.dir / "tvc.db").unlink()
    report = tvc.Registry.rebuild_index(clone.root)
    assert report["recovered"] == []
    with tvc.Registry(clone.root) as again:
        assert {v.id: v.number for v in again.search("model = m")} == before
