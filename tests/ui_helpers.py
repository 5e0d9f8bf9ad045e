"""The web UI for tests: ``tvc ui`` as a real subprocess on a free loopback port."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from server_helpers import running_tvc


def copy_registry(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


@contextmanager
def running_ui(data: Path, author: str = "ui-user"):
    """``tvc -R DATA ui --port P`` once it answers: ``(url, process)``; killed after."""
    with running_tvc(["-R", str(data), "ui"], "/ui/static/tvc.css", TVC_AUTHOR=author) as got:
        yield got
