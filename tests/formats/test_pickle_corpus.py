"""Every hostile pickle of the corpus is refused, every legitimate file accepted, nothing runs.

The corpus (``pickle_corpus``) is built at test time. Besides tvc's own verdicts, the files are
shown to the scanners made for this job — picklescan, modelscan, fickling — and every file
picklescan or modelscan flags must be refused by tvc (fickling and ``picklescan --strict`` flag
ordinary torch checkpoints too, so for them only the hostile files are checked). The
comparison, with timings, is in ``tests/formats/pickle_scanners.md`` (``bench/pickle_scanners.py``
prints it).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from formats import pickle_corpus
from tvc.errors import FormatError, UnsafePickleError
from tvc.formats import parse_file


def _build() -> tuple[dict[str, dict[str, tuple[str, bytes]]], Path]:
    """The corpus as bytes, built once at collection (the names parametrize the tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tempfile.mkdtemp(prefix="tvc-corpus-")) / "MARKER"
        files = {
            "hostile": pickle_corpus.hostile_files(Path(tmp), str(marker)),
            "benign": pickle_corpus.benign_files(Path(tmp)),
        }
    return files, marker


_FILES, _MARKER = _build()
HOSTILE = sorted(_FILES["hostile"])
BENIGN = sorted(_FILES["benign"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("corpus")
    out: dict = {"marker": _MARKER}
    for kind, files in _FILES.items():
        out[kind] = {}
        for i, (name, (filename, data)) in enumerate(sorted(files.items())):
            d = tmp / kind / str(i)
            d.mkdir(parents=True)
            (d / filename).write_bytes(data)
            out[kind][name] = d / filename
    return out


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_is_refused_and_never_run(corpus, name):
    path = corpus["hostile"][name]

    with pytest.raises(UnsafePickleError) as info:
        parse_file(path)

    assert info.value.exit_code == 6
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "--allow-unsafe-pickle" in message
    # stored as opaque bytes when the user says so, still without running anything
    layout = parse_file(path, allow_unsafe_pickle=True)
    assert layout.metadata.get("unsafe_imports")
    assert not corpus["marker"].exists()


@pytest.mark.parametrize("name", BENIGN)
def test_legitimate_file_is_accepted(corpus, name):
    layout = parse_file(corpus["benign"][name])

    assert "unsafe_imports" not in layout.metadata


@settings(max_examples=300, deadline=None)
@given(data=st.data(), hostile=st.booleans())
def test_fuzz_mutated_corpus_files(data, hostile, corpus, mutate, scratch, check_layout):
    kind, names = ("hostile", HOSTILE) if hostile else ("benign", BENIGN)
    path = corpus[kind][data.draw(st.sampled_from(names), label="file")]
    blob = mutate(data, path.read_bytes())
    out = scratch / f"fuzz{path.suffix}"
    out.write_bytes(blob)
    for allow in (False, True):
        try:
            layout = parse_file(out, allow_unsafe_pickle=allow)
        except FormatError as e:
            assert "cannot be parsed" not in str(e), e  # foreseen, not caught by the net
            assert "\n" not in str(e)
            continue
        check_layout(layout, blob)
    assert not corpus["marker"].exists()


def test_legitimate_torch_files_keep_their_tensors(corpus):
    for name in ("torch zip", "torch legacy", "torch legacy [.bin]", "torch legacy p4"):
        layout = parse_file(corpus["benign"][name])
        assert layout.format == "torch", name
        assert len(layout.tensors) >= 4, name


def _picklescan_flags(path: Path) -> bool:
    scanner = pytest.importorskip("picklescan.scanner")
    try:
        return scanner.scan_file_path(str(path)).issues_count > 0
    except Exception:  # picklescan raises on some files (an .npy named .bin, say)
        return False


def _modelscan_flags(path: Path) -> bool:
    modelscan = pytest.importorskip("modelscan.modelscan")
    return len(modelscan.ModelScan().scan(str(path))["issues"]) > 0


def _fickling_flags(path: Path) -> bool:
    fickling = pytest.importorskip("fickling")
    from fickling.analysis import Severity

    if zipfile.is_zipfile(path):
        found = fickling.scan_zip_archive(str(path), graceful=True).values()
        return any(r.severity >= Severity.LIKELY_UNSAFE for r in found)
    result = fickling.scan_file(str(path), graceful=True)
    return bool(result.results) and result.severity >= Severity.LIKELY_UNSAFE


@pytest.mark.parametrize("scanner", [_picklescan_flags, _modelscan_flags])
def test_every_file_a_scanner_flags_is_refused(corpus, scanner):
    logging.disable(logging.CRITICAL)  # the scanners log every finding
    try:
        flagged = [
            (kind, name)
            for kind in ("hostile", "benign")
            for name, path in corpus[kind].items()
            if scanner(path)
        ]
    finally:
        logging.disable(logging.NOTSET)
    assert flagged, "the scanner flags nothing: the comparison tests nothing"
    for kind, name in flagged:
        with pytest.raises(UnsafePickleError):
            parse_file(corpus[kind][name])
    assert not corpus["marker"].exists()


def test_every_hostile_file_fickling_flags_is_refused(corpus):
    flagged = [name for name, path in corpus["hostile"].items() if _fickling_flags(path)]
    assert flagged
    for name in flagged:
        with pytest.raises(UnsafePickleError):
            parse_file(corpus["hostile"][name])


def test_scikit_learn_model_is_refused_unless_allowed(tmp_path):
    # Decision: a joblib file of a scikit-learn model imports sklearn classes (and joblib's
    # array wrapper) that tvc cannot vouch for — unpickling can run any of their __setstate__,
    # and an allow-list of "sklearn.*" would let any callable under it through — so it is
    # refused, naming what it imports, unless --allow-unsafe-pickle.
    joblib = pytest.importorskip("joblib")
    linear = pytest.importorskip("sklearn.linear_model")
    model = linear.LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    path = tmp_path / "clf.joblib"
    joblib.dump(model, path)

    with pytest.raises(UnsafePickleError, match="sklearn"):
        parse_file(path)
    assert parse_file(path, allow_unsafe_pickle=True).metadata["unsafe_imports"]


def test_cli_commit_refuses_with_exit_6_and_stores_nothing(corpus, tmp_path):
    env = {**os.environ, "TVC_DAEMON": "0"}
    reg = tmp_path / "reg"
    subprocess.run([sys.executable, "-m", "tvc", "init", str(reg)], check=True, env=env)
    for name in ("legacy torch, keys pickle p0",):
        path = corpus["hostile"][name]
        out = subprocess.run(
            [sys.executable, "-m", "tvc", "-R", str(reg), "commit", "m", str(path), "-m", "x"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert out.returncode == 6, (name, out.stderr)
        assert out.stderr.count("\n") == 1 and "allow-unsafe-pickle" in out.stderr, out.stderr
    log = subprocess.run(
        [sys.executable, "-m", "tvc", "-R", str(reg), "ls", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert log.stdout.strip() == "[]", log.stdout
    assert not corpus["marker"].exists()


def test_random_bytes_are_not_taken_for_pickles():
    # Sniffing by content must not refuse ordinary binary files: before the lenient rules,
    # 1 in 256 raw .bin files (first byte 0x80) and about 1 in 12,000 (an EXT opcode, then
    # STOP) were refused. 60,000 random files of 16 B to 4 KiB, none refused.
    import io
    import random

    from tvc.formats.pickle_files import find_pickles, may_hold_pickles

    r = random.Random(5)
    sniffed = 0
    for _ in range(60_000):
        size = r.choice([16, 64, 512, 4096])
        data = r.randbytes(size)
        if not may_hold_pickles(data[:512]):
            continue
        sniffed += 1
        findings, legacy = find_pickles("raw.bin", io.BytesIO(data), size, ".bin")
        assert not findings.unsafe and not findings.problems and legacy is None, data[:64]
    assert sniffed > 10_000


def test_npy_header_numpy_reads_only_with_allow_pickle(tmp_path):
    # np.load lifts its 10,000-byte header limit when allow_pickle=True, so a long header
    # must not make tvc skip the object array's pickle.
    import pickle
    import struct

    import numpy as np

    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + " " * 20_000 + "\n"
    head = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode()
    benign = tmp_path / "benign.npy"
    benign.write_bytes(head + pickle.dumps(np.array(["a"], dtype=object), protocol=3))
    with pytest.raises(ValueError, match="large"):
        np.load(benign)
    assert np.load(benign, allow_pickle=True)[0] == "a"  # read despite the long header
    assert parse_file(benign).metadata["pickle"] is True

    hostile = tmp_path / "a.npy"
    hostile.write_bytes(head + pickle_corpus.hostile_pickles("/nonexistent")["os.system p2"])
    with pytest.raises(UnsafePickleError, match="system"):
        parse_file(hostile)
