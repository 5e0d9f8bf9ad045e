"""``tvc ui``: the web UI over a local registry (``tvc server`` serves the same pages)."""

from __future__ import annotations

import sys

import typer

from tvc.cli import common


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8471, "--port", help="Port to listen on."),
) -> None:
    """Browse models, versions, metrics, tensor diffs, lineage and audit in a web browser, and
    move aliases, roll back, make transitions and add metrics (as your author name)."""
    from tvc.repo.repository import find_root
    from tvc.ui import serve

    root = find_root(common.state.registry_path)
    sys.stderr.write(f"tvc ui: {root} on http://{host}:{port}/ui/\n")
    sys.stderr.flush()
    serve(root, host=host, port=port)
