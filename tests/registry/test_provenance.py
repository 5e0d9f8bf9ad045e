"""Lineage recorded at commit: code commit (git), data sets (hashed, stored, referenced),
params/metrics checks, and metrics added later without changing the id."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from tvc.errors import UsageError
from tvc.registry import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path):
    """A git work tree with one commit, on branch ``trainer``, with a credentialed remote."""
    work = tmp_path / "project"
    work.mkdir()
    git(work, "init", "-q", "-b", "trainer")
    (work / "train.py").write_text("print('train')\n")
    git(work, "add", "train.py")
    git(work, "commit", "-q", "-m", "trainer")
    git(work, "remote", "add", "origin", "https://user:s3cret@example.com/team/project.git")
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True
    ).stdout.strip()
    return work, sha


@needs_git
def test_code_commit_recorded_from_working_directory(reg, repo, monkeypatch):
    work, sha = repo
    monkeypatch.chdir(work)
    out = work / "out"
    out.mkdir()
    (out / "w.txt").write_text("weights")  # untracked output: not "dirty"
    v = reg.commit("m", [out], "trained").version
    assert v.code == {
        "commit": sha,
        "dirty": False,
        "branch": "trainer",
        "remote": "https://example.com/team/project.git",  # credentials dropped
    }
    (work / "train.py").write_text("print('changed')\n")
    (out / "w.txt").write_text("weights 2")
    v2 = reg.commit("m", [out], "from a dirty tree").version
    assert v2.code["dirty"] is True and v2.code["commit"] == sha
    assert reg.fsck()["ok"]


@needs_git
def test_code_commit_found_from_committed_path(reg, repo, tmp_path, monkeypatch):
    work, sha = repo
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (work / "model.txt").write_text("w")
    assert reg.commit("m", [work / "model.txt"], "x").version.code["commit"] == sha
    no_code = reg.commit("m", [work / "model.txt"], "y", detect_code=False).version
    assert no_code.code is None


@needs_git
def test_detached_head_and_a_repository_without_commits(repo, tmp_path):
    work, sha = repo
    git(work, "checkout", "-q", "--detach")
    (work / "train.py").write_text("print('edited')\n")
    info = provenance.git_code_info(work)
    assert info is not None
    assert (info["commit"], info["branch"], info["dirty"]) == (sha, None, True)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    (fresh / "a.py").write_text("a\n")
    git(fresh, "add", "a.py")  # staged, but nothing committed: no code commit to record
    assert provenance.git_code_info(fresh) is None


@needs_git
def test_linked_worktree_and_git_dir_are_found(repo, tmp_path, monkeypatch):
    """Where ``.git`` is a file (a linked worktree, a submodule) or the repository is named
    by GIT_DIR, the quick "no repository here" check must not hide the commit."""
    work, sha = repo
    linked = tmp_path / "linked"
    git(work, "worktree", "add", "-q", "--detach", str(linked))
    assert (linked / ".git").is_file()
    assert provenance.git_code_info(linked / "train.py")["commit"] == sha
    outside = tmp_path / "outside"
    outside.mkdir()
    assert provenance.git_code_info(outside) is None
    monkeypatch.setenv("GIT_DIR", str(work / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(work))
    assert provenance.git_code_info(outside)["commit"] == sha


def test_no_git_repository_or_no_git_records_nothing(reg, tmp_path, monkeypatch):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "w.txt").write_text("w")
    monkeypatch.chdir(d)
    assert provenance.git_code_info(d) is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert reg.commit("m", [d], "no git").version.code is None


def test_explicit_code_is_kept(reg, commit):
    v = commit(code={"commit": "abc", "dirty": False})
    assert v.code == {"commit": "abc", "dirty": False}


def test_dataset_path_recorded_by_hash_and_size(reg, commit, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x,y\n1,2\n")
    (data / "b.csv").write_text("x,y\n3,4\n")
    v = commit(datasets={"train": str(data), "eval": "hf:glue/sst2"})
    rec = v.datasets["train"]
    assert rec["size"] == 16 and rec["files"] == 2 and len(rec["digest"]) == 64
    assert v.datasets["eval"] == {"id": "hf:glue/sst2"}
    (data / "b.csv").write_text("x,y\n3,5\n")
    assert commit(datasets={"train": data}).datasets["train"]["digest"] != rec["digest"]


def test_store_dataset_versions_data_once(reg, commit, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("x,y\n" + "1,2\n" * 1000)
    a = commit(datasets={"train": str(data)}, store_datasets=True)
    b = commit(datasets={"train": str(data)}, store_datasets=True)
    assert a.datasets["train"]["version"] == "datasets/train@v1"
    assert b.datasets["train"] == a.datasets["train"]  # unchanged data: same version
    assert len(reg.log("datasets/train")) == 1
    assert reg.open("datasets/train@v1").read("train.csv") == data.read_bytes()
    data.write_text("x,y\n" + "1,2\n" * 1001)
    c = commit(datasets={"train": str(data)}, store_datasets=True)
    assert c.datasets["train"]["version"] == "datasets/train@v2"
    # a stored data set can be named as MODEL@REF by a later commit
    d = commit(datasets={"train": "datasets/train@v1"})
    assert d.datasets["train"] == {
        "version": "datasets/train@v1",
        "version_id": a.datasets["train"]["version_id"],
    }
    assert reg.fsck()["ok"]


def test_store_dataset_errors(reg, commit):
    with pytest.raises(UsageError, match="no such file"):
        commit(datasets={"train": "missing.csv"}, store_datasets=True)
    with pytest.raises(UsageError, match="cannot be stored"):
        reg.store_dataset("Bad Name", ".")


@pytest.mark.parametrize("bad", [math.nan, math.inf, {"deep": [1.0, -math.inf]}])
def test_non_finite_values_are_refused(reg, commit, bad):
    with pytest.raises(UsageError, match="not a finite number"):
        commit(metrics={"loss": bad})
    assert reg.models() == []


def test_metrics_added_later_keep_the_id(reg, commit):
    v = commit(metrics={"acc": 0.91, "loss": 0.3})
    after = reg.add_metrics(v.ref, {"acc": 0.93, "test_f1": 0.88}, reason="held-out eval")
    assert after.id == v.id
    assert after.metrics == {"acc": 0.93, "loss": 0.3, "test_f1": 0.88}
    assert reg.show(v.ref).metrics == after.metrics
    assert reg.committed_metrics(v.ref) == {"acc": 0.91, "loss": 0.3}
    (e,) = reg.metric_history(v.ref)
    assert (e.metrics, e.previous, e.reason, e.actor) == (
        {"acc": 0.93, "test_f1": 0.88},
        {"acc": 0.91},
        "held-out eval",
        "tester",
    )
    report = reg.fsck()
    assert report["ok"], report["errors"]
    assert [x.ref for x in reg.search("metrics.test_f1 > 0.8 and metrics.acc = 0.93")] == [v.ref]
    with pytest.raises(UsageError):
        reg.add_metrics(v.ref, {})
    with pytest.raises(UsageError):
        reg.add_metrics(v.ref, {"x": math.nan})
