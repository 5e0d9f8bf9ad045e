"""Every failure is one line and its exit code: the CLI fed random refs, names, options and
environment values never shows a traceback, and exits with a code from README's table.

In-process through ``tvc.cli.main.main(argv)`` (stdout and stderr captured, as bytes), against
one small registry; a few cases as real processes, where the interpreter's own start and exit
(a closed pipe, a deleted working directory, a broken environment) are part of the story.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvc.cli.main import main

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_codes() -> set[int]:
    """The exit codes of README's table (the contract this test holds the CLI to)."""
    text = README.read_text()
    table = text[text.index("### Exit codes") :]
    table = table[: table.index("\n\n", table.index("| code |"))]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}


CODES = documented_codes()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """m@v1..v2 (branch main, exp), a tag, an alias, a data set; a deep scratch directory."""
    root = tmp_path_factory.mktemp("fuzz")
    work = root / "a" / "b" / "c"
    (work / "out").mkdir(parents=True)
    (work / "out" / "w.txt").write_text("weights 1\n")
    (work / "data.csv").write_text("x,y\n")
    old = os.getcwd()
    os.chdir(work)
    try:
        for argv in (
            ["init", "-q"],
            ["commit", "m", "out", "-m", "one", "--param", "lr=0.1", "--metric", "acc=0.9", "-q"],
            ["tag", "m", "t1"],
            ["branch", "m", "exp"],
            ["commit", "m", "out/w.txt", "-m", "two", "--dataset", "d=data.csv", "-q"],
            ["alias", "set", "m", "prod", "v1"],
        ):
            code, _out, err = run(argv, {})
            assert code == 0, (argv, err)
    finally:
        os.chdir(old)
    return work


def run(argv: list[str], env: dict[str, str]) -> tuple[int, bytes, str]:
    """``main(argv)`` with ``env`` set, stdout and stderr captured (bytes: `cat` writes them)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
            out.flush()
            err.flush()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, out.buffer.getvalue(), err.buffer.getvalue().decode()


def check(argv: list[str], env: dict[str, str]) -> None:
    code, _out, err = run(argv, env)
    assert "Traceback" not in err, (argv, env, err)
    assert "internal error" not in err, (argv, env, err)
    assert code in CODES, (argv, env, code, err)
    if code != 0 and err and not err.startswith(("Usage:", "tvc: error:")):
        raise AssertionError((argv, env, err))


# -- what a user (or a script gone wrong) types ------------------------------------------------
HOSTILE = st.sampled_from(
    [
        "",
        " ",
        "..",
        "../..",
        "/",
        "/nonexistent",
        "/dev/null",
        "-",
        "--",
        "-x",
        "@",
        "~",
        "~1",
        "a" * 300,
        "x" * 5000,
        "\x1b[31m",
        "a\nb",
        "ü模型",
        "\udcff",
        "[bold]",
        "x[/b]",
        "99999999999999999999",
        "-99999999999999999999",
        "1e400",
        "nan",
        "0",
        "-1",
    ]
)
# No NUL: no argv or environment can hold one (test_a_nul_byte_in_process covers main()).
TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=12) | HOSTILE
REF = (
    st.sampled_from(
        [
            "m",
            "m@v1",
            "m@v2",
            "m@v0",
            "m@main",
            "m@exp",
            "m@t1",
            "m@prod",
            "m~1",
            "m~~~",
            "m@v1~5",
            "m@v99999999999999999999",
            "m@v18446744073709551616",
            "m~99999999999999999999",
            "m@deadbeef",
            "m@deadbeefdeadbeef",
            "nope",
            "nope@v1",
            "M@v1",
            "m@",
            "m@v1@v2",
            "team/m@v1",
            "datasets/d",
        ]
    )
    | TEXT
)
NAME = st.sampled_from(["prod", "staging", "t1", "exp", "main", "v3", "new-1"]) | TEXT
PATH = st.sampled_from(["w.txt", "out", "out/w.txt", "data.csv", "missing", "sub/dir"]) | TEXT
NUMBER = st.sampled_from(["1", "0", "-1", "abc", "99999999999999999999", "2.5", ""]) | TEXT
PAIR = st.sampled_from(["k=v", "acc=0.5", "=x", "k=", "noequals", "a=1e400", "b=nan"]) | TEXT
QUERY = (
    st.sampled_from(
        [
            "metrics.acc >= 0.9",
            "params.lr < 1e-3 and state = created",
            "state = nowhere",
            "created > 99999999999d",
            "version > 99999999999999999999",
            "(((",
            "metrics. >= ",
            "model = m*",
            "id = deadbeef",
            "tags = t1 or alias != prod",
        ]
    )
    | TEXT
)
ORDER = st.sampled_from(["-metrics.acc", "created", "nope", "-", "params."]) | TEXT
STATE = st.sampled_from(["training", "archived", "production", "nowhere", ""]) | TEXT
STRATEGY = st.sampled_from(["average", "ours", "theirs", "task-arithmetic", "nope"])


def command() -> st.SearchStrategy[list[str]]:
    opt = st.builds
    return st.one_of(
        opt(lambda r, n: ["log", r, *(["-n", n] if n else [])], REF, NUMBER | st.just("")),
        opt(lambda r, j: ["show", r, *j], REF, st.sampled_from([[], ["--json"]])),
        opt(lambda r: ["ls", *([r] if r else [])], REF),
        opt(lambda r, p: ["cat", r, p], REF, PATH),
        opt(lambda r, d, p: ["checkout", r, d, "--path", p, "-q"], REF, PATH, PATH),
        opt(lambda a, b: ["diff", a, b], REF, REF),
        opt(lambda r, p: ["blame", r, p], REF, PATH),
        opt(lambda n, r: ["branch", "m", n, "--from", r], NAME, REF),
        opt(lambda m, n: ["branch", m, "-d", n], REF, NAME),
        opt(lambda n, r: ["tag", "m", n, r], NAME, REF),
        opt(lambda m: ["tag", m], REF),
        opt(lambda n, r, w: ["alias", "set", "m", n, r, "--reason", w], NAME, REF, TEXT),
        opt(lambda m: ["alias", "list", m], REF),
        opt(lambda m, n: ["alias", "history", m, n], REF, NAME),
        opt(lambda n, t: ["rollback", "m", n, *(["--to", t] if t else [])], NAME, REF),
        opt(lambda r, s: ["lifecycle", "set", r, s], REF, STATE),
        opt(lambda r: ["lifecycle", "history", r], REF),
        opt(lambda q, o, n: ["search", q, "--order-by", o, "--limit", n], QUERY, ORDER, NUMBER),
        opt(lambda r, n: ["lineage", r, "--depth", n], REF, NUMBER),
        opt(lambda m, n: ["audit", m, "-n", n], REF, NUMBER),
        opt(lambda r, p: ["metric", r, p], REF, PAIR),
        opt(
            lambda m, p, msg, kv, b, t: [
                "commit",
                m,
                p,
                "-m",
                msg,
                "--param",
                kv,
                "--base",
                b,
                "--tag",
                t,
                "-q",
            ],
            NAME | st.just("m"),
            PATH,
            TEXT,
            PAIR,
            REF,
            NAME,
        ),
        opt(lambda a, b, s: ["merge", a, b, "--strategy", s, "--dry-run"], REF, REF, STRATEGY),
        st.just(["stats"]),
        st.just(["fsck"]),
        opt(lambda n, g: ["gc", "--dry-run", "--keep-last", n, "--grace", g], NUMBER, TEXT),
        opt(lambda r, w: ["rm", r, "--reason", w], REF, TEXT),
        st.just(["fsck", "--rebuild-index", "--json"]),
        opt(lambda x: [x], TEXT),  # not a command
        opt(lambda x: ["log", "m", x], TEXT),  # a stray option or argument
    )


def _environ_can_hold(text: str) -> bool:
    try:
        os.fsencode(text)  # a lone surrogate outside surrogateescape's range cannot be
    except UnicodeEncodeError:
        return False
    return True


HOSTILE_ENV = st.fixed_dictionaries(
    {},
    optional={
        "TVC_LOCK_TIMEOUT": st.sampled_from(["abc", "-1", "nan", "inf", "1e400", "", " 5 ", "0.5"]),
        "TVC_DAEMON": st.sampled_from(["weird", "", "1", "0"]),
        "TVC_DIR": st.sampled_from(["/nonexistent", "", "..", "relative", "/dev/null", "/", "."]),
        "TVC_AUTHOR": TEXT.filter(_environ_can_hold),
        "TZ": st.sampled_from(["Invalid/Zone", "", "UTC", "Asia/Tokyo"]),
    },
)
# Mostly a sane environment, so most examples get past the checks to the commands themselves.
ENV = st.one_of(st.just({}), st.just({}), st.just({}), HOSTILE_ENV)


@settings(
    # Quick in the suite; TVC_FUZZ_EXAMPLES=5000 for a deeper search.
    max_examples=int(os.environ.get("TVC_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    argv=command(),
    env=ENV,
    registry_opt=st.sampled_from([None, None, None, ".", "..", "/nonexistent"]),
)
def test_no_traceback_ever(registry, argv, env, registry_opt):
    old = os.getcwd()
    os.chdir(registry)
    try:
        check((["-R", registry_opt] if registry_opt else []) + argv, env)
    finally:
        os.chdir(old)


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "m@v99999999999999999999"],
        ["log", "m~99999999999999999999"],
        ["log", "m", "-n", "99999999999999999999"],
        ["search", "", "--limit", "99999999999999999999"],
        ["lineage", "m", "--depth", "99999999999999999999"],
        ["audit", "m", "-n", "-1"],
    ],
)
def test_huge_and_negative_numbers(registry, argv, monkeypatch):
    monkeypatch.chdir(registry)
    check(argv, {})


@pytest.mark.parametrize(
    "argv",
    [["checkout", "m", "\x00"], ["commit", "m", "a\x00b", "-m", "x"], ["cat", "m", "\x00"]],
)
def test_a_nul_byte_in_process(registry, monkeypatch, argv):
    monkeypatch.chdir(registry)
    check(argv, {})


def test_a_bad_lock_timeout_is_a_usage_error(registry, monkeypatch):
    monkeypatch.chdir(registry)
    code, _out, err = run(["tag", "m", "t9"], {"TVC_LOCK_TIMEOUT": "abc"})
    assert code == 2 and "TVC_LOCK_TIMEOUT" in err and err.count("\n") == 1


# -- real processes ----------------------------------------------------------------------------
def _tvc(registry: Path, *argv: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tvc", *argv],
        cwd=registry,
        env={**os.environ, **(env or {})},
        capture_output=True,
        timeout=60,
        **kw,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"TVC_LOCK_TIMEOUT": "abc"},
        {"TVC_DAEMON": "weird"},
        {"TVC_DIR": "/nonexistent"},
        {"COLUMNS": "abc", "LINES": "-5"},
        {"TZ": "Invalid/Zone"},
        {"LANG": "xx_XX.WEIRD", "LC_ALL": "C"},
        {"XDG_CONFIG_HOME": "/nonexistent", "HOME": "/nonexistent"},
    ],
    ids=lambda e: ",".join(e),
)
def test_a_hostile_environment_as_a_real_process(registry, env):
    r = _tvc(registry, "log", "m", env=env)
    assert b"Traceback" not in r.stderr, (env, r.stderr)
    assert r.returncode in CODES
    assert r.stderr.count(b"\n") <= 1, r.stderr


def test_cat_into_a_closed_pipe_exits_quietly(registry):
    big = registry / "big"
    big.mkdir(exist_ok=True)
    (big / "big.bin").write_bytes(os.urandom(4 << 20))
    assert _tvc(registry, "commit", "big", "big", "-m", "big", "-q").returncode == 0
    r = subprocess.run(
        [
            "bash",
            "-c",
            f"{sys.executable} -m tvc cat big@v1 big.bin | head -c 100 | wc -c; "
            'echo "${PIPESTATUS[0]}"',
        ],
        cwd=registry,
        capture_output=True,
        timeout=60,
    )
    # 141 = 128 + SIGPIPE, as `cat` itself reports a closed pipe, and not a word
    assert r.stdout.split() == [b"100", b"141"] and r.stderr == b"", r.stderr


def test_cat_onto_a_full_disk_is_a_storage_error(registry):
    with open("/dev/full", "wb") as full:
        r = subprocess.run(
            [sys.executable, "-m", "tvc", "cat", "m@v1", "w.txt"],
            cwd=registry,
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert r.returncode == 10 and r.stderr.count(b"\n") == 1, r.stderr
    assert b"disk full" in r.stderr


def test_the_issues_cases_are_one_line(tmp_path):
    """The cases of issue 12 that reach the CLI: a symlink loop and a non-UTF-8 name in a
    committed directory, a destination that is a file or cannot be created, a deleted
    working directory. Whatever layer fails, the user sees one line and a documented code."""
    work = tmp_path / "w"
    (work / "loop").mkdir(parents=True)
    (work / "loop" / "a.txt").write_text("a")
    os.symlink("self", work / "loop" / "self")
    (work / "bytes").mkdir()
    (work / "bytes" / "a.txt").write_text("a")
    (work / "bytes" / os.fsdecode(b"\xff.bin")).write_bytes(b"x")
    (work / "ok").mkdir()
    (work / "ok" / "a.txt").write_text("a")
    (work / "file").write_text("in the way")
    assert _tvc(work, "init", "-q").returncode == 0
    assert _tvc(work, "commit", "m", "ok", "-m", "ok").returncode == 0
    for argv in (
        ["commit", "m", "loop", "-m", "loop"],
        ["commit", "m", "bytes", "-m", "non-UTF-8 name"],
        ["checkout", "m", "file"],
        ["checkout", "m", "file/below"],
        ["checkout", "m", "/proc/no/such"],
        ["checkout", "m", "x" * 300],
        ["rollback", "m", os.fsdecode(b"\xff")],  # bytes that are not UTF-8, in argv
        ["alias", "rm", "m", os.fsdecode(b"\xff")],
        ["commit", "m", "ok", "-m", os.fsdecode(b"x\xff")],
    ):
        r = _tvc(work, *argv)
        assert b"Traceback" not in r.stderr, (argv, r.stderr)
        assert r.returncode in CODES - {0} and r.stderr.count(b"\n") == 1, (argv, r.stderr)
