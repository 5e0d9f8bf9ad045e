"""``examples/quickstart.py`` (the seed's example: init, commit, clone, read back) runs."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_quickstart_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert capsys.readouterr().out == "b'# my model\\n'\n"
    assert (tmp_path / "copy" / ".tvc").is_dir()
