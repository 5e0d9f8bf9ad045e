"""Output is data, not markup: hostile names and messages through every command that shows them.

Human output must show user text as it is — `w[bold].txt` as `w[bold].txt`, never as Rich markup
(`x[/b].txt` used to crash `ls`) — and must never pass a control character to the terminal
(an escape sequence in a commit message could clear the screen, retitle the window or forge
lines of output); `--json` keeps every string exact.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from safetensors.numpy import save_file

from tvc.cli.common import shown
from tvc.cli.main import main

# What a terminal must never receive from user data: C0 but newline, DEL, C1, bidi controls.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

NAMES = [
    "w[bold].txt",
    "x[/b].txt",
    "e\x1b[31mred\x1b[0m.txt",
    "cr\rforged.txt",
    "nl\nm@v9 forged.txt",
    ":smile: [link=x]y[/link].txt",
    "bidi\u202eexe.txt",
    "c1\x9b2J.txt",
]
MESSAGE = "fix [bold]it[/b] \x1b[2J\x1b]0;pwned\x07 :smile: \u202eok\r\nsecond [/] line"
AUTHOR = "eve [/]\x1b[31m"
REASON = "because [/i]\x1b[5m\r"
TENSOR = "t[/b].\x1b[31mw"
PARAM = ("lr[/b]", "3e-4 [red]x\x1b[0m")


def _model(path, scale: float) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(NAMES):
        (path / name).parent.mkdir(parents=True, exist_ok=True)  # `x[/b].txt` is x[ / b].txt
        (path / name).write_text(f"file {i} {scale}\n")
    w = np.arange(64, dtype=np.float32).reshape(8, 8)
    save_file({TENSOR: w * scale, "plain": w}, str(path / "m[i].safetensors"))


@pytest.fixture
def hostile(tmp_path, monkeypatch, capsys):
    """A registry whose every user-given string is hostile: file and tensor names, message,
    author, params, metrics, data set, reasons."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TVC_AUTHOR", AUTHOR)
    assert main(["init", "-q"]) == 0
    _model(tmp_path / "out", 1.0)
    data = tmp_path / "d[i]\x1b[31m.csv"
    data.write_text("a,b\n")
    common = ["-m", MESSAGE, "--param", "=".join(PARAM), "--metric", "acc[/]=0.95", "-q"]
    assert main(["commit", "m", "out", *common, "--dataset", f"set[/]={data}"]) == 0
    _model(tmp_path / "out", 2.0)
    assert main(["commit", "m", "out", *common]) == 0
    assert main(["alias", "set", "m", "production", "v1", "--reason", REASON]) == 0
    assert main(["alias", "set", "m", "production", "v2", "--reason", REASON]) == 0
    assert main(["lifecycle", "set", "m@v2", "training", "--reason", REASON]) == 0
    assert main(["metric", "m@v1", "f1[/]=0.5", "--reason", REASON]) == 0
    capsys.readouterr()
    return tmp_path


def _human(capsys, *argv: str) -> str:
    code = main(list(argv))
    cap = capsys.readouterr()
    assert code == 0, (argv, cap.err)
    assert not RAW_CONTROL.search(cap.out), (argv, cap.out)
    assert not RAW_CONTROL.search(cap.err), (argv, cap.err)
    return cap.out


COMMANDS = [
    ("log", "m"),
    ("show", "m@v1"),
    ("ls", "m@v1"),
    ("ls",),
    ("diff", "m@v1", "m@v2", "--all"),
    ("blame", "m@v2"),
    ("audit", "m"),
    ("alias", "list", "m"),
    ("alias", "history", "m", "production"),
    ("lifecycle", "history", "m"),
    ("search", "version >= 1"),
    ("lineage", "m@v1"),
    ("metric", "m@v1"),
    ("stats",),
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a))
def test_human_output_shows_user_text_as_text(hostile, capsys, argv):
    out = _human(capsys, *argv)
    # Every hostile string the command shows, it shows as itself, escapes made visible.
    expected = {
        "log": [MESSAGE.splitlines()[0], AUTHOR, *PARAM],
        "show": [MESSAGE.splitlines()[0], AUTHOR, *PARAM, *NAMES, "set[/]"],
        "ls": [*NAMES, "m[i].safetensors"] if len(argv) > 1 else ["m"],
        "diff": [*NAMES, TENSOR, "m[i].safetensors", "f1[/]"],
        "blame": [*NAMES, TENSOR, MESSAGE.splitlines()[0]],
        "audit": [AUTHOR, REASON, "f1[/]"],
        "alias": [AUTHOR, REASON],
        "lifecycle": [AUTHOR, REASON],
        "search": [*PARAM, "acc[/]"],
        "lineage": [MESSAGE.splitlines()[0], "set[/]", "d[i]"],
        "metric": ["acc[/]", "f1[/]", AUTHOR, REASON],
        "stats": ["m"],
    }[argv[0]]
    for text in expected:
        assert shown(text) in out, (argv, text)
    assert ":smile:" not in MESSAGE or "😄" not in out  # no emoji codes either


def test_escapes_are_visible_and_lines_unforged(hostile, capsys):
    out = _human(capsys, "ls", "m@v1")
    assert "e\\x1b[31mred\\x1b[0m.txt" in out
    assert "nl\\nm@v9 forged.txt" in out  # one line, not a forged second one
    assert not any(line.lstrip().startswith("m@v9") for line in out.splitlines())
    log = _human(capsys, "log", "m")
    second = [line for line in log.splitlines() if "second" in line]
    assert second and all(line.startswith("  ") for line in second)  # indented as message


def test_commit_output_is_escaped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "-q"]) == 0
    d = tmp_path / "w[bold]\x1b[31m"
    d.mkdir()
    (d / "x[").mkdir()
    (d / "x[/b].txt").write_text("x")
    out = _human(capsys, "commit", "m", str(d), "-m", MESSAGE)
    assert out.startswith("m@v1 ")
    out = _human(capsys, "checkout", "m@v1", str(d / "co"))
    assert shown(str(d / "co")) in out or "x[/b].txt" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("log", "m", "--json"),
        ("show", "m@v1", "--json"),
        ("ls", "m@v1", "--json"),
        ("diff", "m@v1", "m@v2", "--all", "--json"),
        ("blame", "m@v2", "--json"),
        ("audit", "m", "--json"),
        ("alias", "history", "m", "production", "--json"),
        ("lifecycle", "history", "m", "--json"),
        ("search", "version >= 1", "--json"),
        ("lineage", "m@v1", "--json"),
    ],
    ids=lambda a: " ".join(a),
)
def test_json_keeps_every_string_exact(hostile, capsys, argv):
    assert main(list(argv)) == 0
    text = capsys.readouterr().out
    assert not RAW_CONTROL.search(text)  # JSON escapes them itself
    strings = set(_strings(json.loads(text)))
    wanted = {
        "log": {MESSAGE, AUTHOR, PARAM[0], PARAM[1]},
        "show": {MESSAGE, AUTHOR, *NAMES, "set[/]"},
        "ls": set(NAMES),
        "diff": {*NAMES, TENSOR},
        "blame": {*NAMES, TENSOR},
        "audit": {AUTHOR, REASON},
        "alias": {AUTHOR, REASON},
        "lifecycle": {AUTHOR, REASON},
        "search": {MESSAGE, PARAM[0], PARAM[1]},
        "lineage": {MESSAGE},
    }[argv[0]]
    assert wanted <= strings, wanted - strings


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def test_errors_quote_user_text_without_control_characters(hostile, capsys):
    code = main(["cat", "m@v1", "no\x1b[2Jsuch[/b]"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and not RAW_CONTROL.search(err)
    code = main(["search", "metrics.acc >= (\x1b[31m"])
    err = capsys.readouterr().err
    assert code == 2 and not RAW_CONTROL.search(err)
    for argv in (["\x1b[2Jnope"], ["log", "m", "-n", "\x1b]0;t\x07"], ["log", "--\x1b[31m"]):
        code = main(argv)  # Click's usage errors quote what was typed
        err = capsys.readouterr().err
        assert code == 2 and "\\x1b" in err and not RAW_CONTROL.search(err), err


def test_shown_escapes_only_what_a_terminal_would_obey():
    assert shown("w[bold].txt") == "w[bold].txt"
    assert shown("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert shown("a\nb") == "a\\nb"
    assert shown("a\nb", lines=True) == "a\nb"
    assert shown("tab\there") == "tab\\there"
    assert shown("\u202e\x9b\x7f") == "\\u202e\\x9b\\x7f"
    assert shown("naïve ünïcode 模型 😄") == "naïve ünïcode 模型 😄"
    assert shown(3.5) == "3.5"
