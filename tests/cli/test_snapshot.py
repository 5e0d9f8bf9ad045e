"""`tvc checkout` and `tvc cat` at their edges: kept files reported, a destination that cannot
be one, stdout closed early or full — always one line (or none) and the right exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tvc.cli.main import main


@pytest.fixture
def reg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "-q"]) == 0
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "big.bin").write_bytes(os.urandom(4 << 20))  # far more than a pipe holds
    (tmp_path / "w" / "small.txt").write_bytes(b"small")
    assert main(["commit", "m", "w", "-m", "one", "-q", "--no-code"]) == 0
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_checkout_reports_files_it_kept(reg, capsys):
    assert run(capsys, "checkout", "m", "out", "-q")[0] == 0
    (reg / "out" / "notes.txt").write_text("mine")
    code, out, err = run(capsys, "checkout", "m", "out", "-q", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["kept"] == [os.path.join("out", "notes.txt")]
    assert sorted(doc["unchanged"]) == ["out/big.bin", "out/small.txt"] and doc["written"] == []
    assert err.count("\n") == 1 and "warning: kept 1 file" in err and "--force" in err
    code, out, err = run(capsys, "checkout", "m", "out", "-q", "--force", "--json")
    assert code == 0 and json.loads(out)["removed"] == ["out/notes.txt"] and err == ""


def test_checkout_into_a_file_is_one_line(reg, capsys):
    (reg / "afile").write_text("x")
    code, _out, err = run(capsys, "checkout", "m", "afile")
    assert code == 7 and err.startswith("tvc: error: afile: exists and is not a directory")
    assert err.count("\n") == 1


def cat_cmd(reg):
    return [sys.executable, "-m", "tvc", "cat", "m", "big.bin"]


def test_cat_into_a_closed_pipe_exits_quietly_as_cat_would(reg):
    p = subprocess.Popen(cat_cmd(reg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=reg)
    assert len(p.stdout.read(1)) == 1  # `| head -c1`
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait() == 141 and err == b""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_cat_onto_a_full_disk_is_one_line(reg):
    with open("/dev/full", "wb") as full:
        r = subprocess.run(cat_cmd(reg), stdout=full, stderr=subprocess.PIPE, cwd=reg)
    assert r.returncode == 10
    assert r.stderr == b"tvc: error: cannot write to standard output: disk full\n"
