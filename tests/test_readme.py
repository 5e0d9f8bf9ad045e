"""The README's examples run as shown: every ``bash`` block, in order, in one directory.

The README promises that its command examples run "as shown, in order, in an empty directory
with an ``out/`` model folder". This runs them through the CLI entry point, in process: each
line must exit 0, or with the code its comment names (``# refused, exit 11: …``). Before each
``tvc commit`` the model in ``out/`` changes a little, as it would between training runs, so
diff, blame and merge have something to show. The seed's Python example runs too.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tvc.cli.main import main

from repo_helpers import make_model_dir

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def commands(block: str) -> list[tuple[str, list[str], int]]:
    """(line as written, argv after ``tvc``, expected exit code) for each command of a block."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        if not line.strip():
            continue
        argv = shlex.split(line, comments=True)
        assert argv[0] == "tvc", line
        expected = re.search(r"#.*\bexit (\d+)", line)
        out.append((line, argv[1:], int(expected.group(1)) if expected else 0))
    return out


def test_every_bash_example_runs_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TVC_AUTHOR", "readme")
    (tmp_path / "data.csv").write_text("x,y\n1,2\n")
    step = 0
    make_model_dir(tmp_path / "out", seed=1)
    ran = 0
    for block in blocks("bash"):
        if not block.startswith("tvc "):
            continue  # the Quick start's make targets
        for line, argv, expected in commands(block):
            if argv[0] == "commit":
                step += 1
                make_model_dir(tmp_path / "out", seed=1, changed=tuple(range(step % 3 + 1)))
            code = main(argv)
            captured = capsys.readouterr()
            assert code == expected, f"{line}\n-> exit {code}\n{captured.err}"
            ran += 1
    assert ran >= 40  # the three sections' examples


def test_the_seed_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seed = next(b for b in blocks("python") if 'Registry.init("work")' in b)
    exec(compile(seed, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.match(r"demo@v1 [0-9a-f]{64}\nb'# my model\\n'\n", out), out


@pytest.mark.parametrize("lang", ["bash", "python", "toml"])
def test_readme_has_examples(lang):
    assert blocks(lang)
