"""Sharing: server, token, login, remote, clone, push, pull, fetch."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import typer

from tvc.cli import common
from tvc.cli.common import JsonOpt, QuietOpt
from tvc.errors import UsageError

token_app = typer.Typer(
    help="Access tokens of a server's registry (run on its data directory).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
remote_app = typer.Typer(
    help="Remotes: other registries (a path or an http(s):// URL) to push to and pull from.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.add_typer(token_app, name="token")
    app.command("login")(login)
    app.add_typer(remote_app, name="remote")
    app.command("clone")(clone)
    app.command("push")(push)
    app.command("pull")(pull)
    app.command("fetch")(fetch)


def _regdir(data: str | None) -> Path:
    from tvc.remote.client import is_url
    from tvc.repo.repository import REGISTRY_DIR, find_root

    where = data or common.state.registry_path
    if is_url(where):  # SVN mode has no registry of its own to push from or pull into
        raise UsageError(
            f"{where} is used directly (-R/TVC_REGISTRY): remotes, push, pull and fetch need "
            f"a registry of your own (tvc clone {where} DIR)"
        )
    return find_root(where) / REGISTRY_DIR


def server(
    data: str = typer.Option(None, "--data", help="Registry directory to serve (default: -R/.)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8470, "--port", help="Port to listen on."),
    store: str = typer.Option(
        None, "--store", help="Packs in s3://BUCKET[/PREFIX]?endpoint=URL (or a path)."
    ),
    db: str = typer.Option(None, "--db", help="Metadata on postgresql://… (shared by replicas)."),
) -> None:
    """Serve a registry over HTTP (tokens: `tvc token create`; API spec at /openapi.json).

    With --store/--db, DATA (default: here) becomes the config directory of the registry they
    hold: made on first use (a new registry, or a replica of one whose DB exists already)."""
    from tvc.server.app import serve

    if store or db:
        _config_dir(Path(data or common.state.registry_path or "."), store, db)
    root = _regdir(data).parent
    sys.stderr.write(f"tvc server: serving {root} on http://{host}:{port}\n")
    sys.stderr.flush()
    serve(root, host=host, port=port)


def _config_dir(where: Path, store: str | None, db: str | None) -> None:
    """Make ``where`` name the registry in ``store``/``db`` (see ``server``)."""
    from tvc.api import Registry
    from tvc.errors import UsageError
    from tvc.repo import db as dbmod
    from tvc.repo.repository import REGISTRY_DIR, Repository

    regdir = where.absolute() / REGISTRY_DIR
    if (regdir / "config.toml").exists():
        with Repository(where) as repo:
            conf = repo.config
        for flag, given, key in (("--store", store, "store"), ("--db", db, "metadata")):
            have = conf.get(key, {}).get("url")
            if given and given != have:
                raise UsageError(
                    f"{regdir} serves {key} {have!r}, not {flag} {given!r}: use another --data"
                )
        return
    if db and dbmod.sqlite_path(dbmod.normalize_url(db, regdir)) is None:
        engine = dbmod.create_engine(dbmod.normalize_url(db, regdir))
        try:
            exists = dbmod.current_revision(engine) is not None
        finally:
            engine.dispose()
        if exists:
            if not store:
                raise UsageError("joining a registry's DB needs its --store as well")
            Repository.join(where, store=store, metadata=db).close()
            return
    Registry.init(where, store=store, metadata=db).close()


def _admin(url: str):
    from tvc.remote.config import token_for
    from tvc.remote.transport import HttpTransport

    return HttpTransport(url, token_for(url))


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="Who or what uses the token (recorded as the actor)."),
    scope: str = typer.Option("read", "--scope", help="read | write | admin."),
    models: list[str] = typer.Option(None, "--models", help="Model name pattern (repeatable)."),
    expires: str = typer.Option(None, "--expires", help="Lifetime, e.g. 30d, 12h."),
    data: str = typer.Option(None, "--data", help="The server's registry directory."),
    server_url: str = typer.Option(None, "--server", help="A server URL (an admin login)."),
    json_: bool = JsonOpt,
) -> None:
    """Create a token; it is printed once and stored only hashed."""
    if server_url:
        body = {"name": name, "scope": scope, "models": models or [], "expires": expires}
        with _admin(server_url) as remote:
            secret = remote.tokens("POST", json=body)["token"]
    else:
        from tvc.server.tokens import TokenStore

        secret = TokenStore(_regdir(data)).create(name, scope, models or [], expires)
    if json_:
        common.emit_json({"name": name, "scope": scope, "token": secret})
    else:
        sys.stdout.write(secret + "\n")


@token_app.command("list")
def token_list(
    data: str = typer.Option(None, "--data", help="The server's registry directory."),
    server_url: str = typer.Option(None, "--server", help="A server URL (an admin login)."),
    json_: bool = JsonOpt,
) -> None:
    """Tokens with scope, models, expiry and revocation (never the secrets)."""
    if server_url:
        with _admin(server_url) as remote:
            rows = remote.tokens("GET")["tokens"]
    else:
        from tvc.server.tokens import TokenStore

        rows = [t.public() for t in TokenStore(_regdir(data)).list()]
    if json_:
        common.emit_json(rows)
        return
    for r in rows:
        state = "revoked" if r["revoked"] else "live"
        until = dt.datetime.fromtimestamp(r["expires"]).isoformat() if r["expires"] else "never"
        pats = ",".join(r["models"]) or "*"
        common.out.print(
            f"{r['name']:<20} {r['scope']:<6} {pats:<20} expires {until:<26} {state}", markup=False
        )


@token_app.command("revoke")
def token_revoke(
    name: str = typer.Argument(..., help="Token name."),
    data: str = typer.Option(None, "--data", help="The server's registry directory."),
    server_url: str = typer.Option(None, "--server", help="A server URL (an admin login)."),
) -> None:
    """Revoke a token: the server refuses it from the next request on."""
    if server_url:
        with _admin(server_url) as remote:
            remote.tokens("DELETE", f"/{name}")
    else:
        from tvc.server.tokens import TokenStore

        TokenStore(_regdir(data)).revoke(name)
    common.out.print(f"Revoked token {name}")


def login(
    url: str = typer.Argument(..., help="Server URL."),
    token: str = typer.Option(None, "--token", help="Token (default: read from stdin)."),
) -> None:
    """Check a token against a server and store it for that URL (a 0600 file)."""
    from tvc.remote.config import save_login
    from tvc.remote.transport import HttpTransport

    if not token:
        token = sys.stdin.readline().strip()
    with HttpTransport(url, token) as remote:
        who = remote.whoami()
    path = save_login(url, token)
    common.out.print(f"Logged in to {url} as {who['name']} ({who['scope']}); saved in {path}")


@remote_app.command("add")
def remote_add(
    name: str = typer.Argument(..., help="Remote name, e.g. origin."),
    url: str = typer.Argument(..., help="A registry path or an http(s):// URL."),
) -> None:
    """Add a remote."""
    from tvc.remote.config import add_remote
    from tvc.remote.transport import is_url

    where = url if is_url(url) else str(Path(url).absolute())
    add_remote(_regdir(None), name, where)
    common.out.print(f"Added remote {name} {where}")


@remote_app.command("list")
def remote_list(json_: bool = JsonOpt) -> None:
    """List remotes."""
    from tvc.remote.config import remotes

    known = remotes(_regdir(None))
    if json_:
        common.emit_json(known)
        return
    for name, url in known.items():
        common.out.print(f"{name:<16} {url}", markup=False)


@remote_app.command("rm")
def remote_rm(name: str = typer.Argument(..., help="Remote name.")) -> None:
    """Remove a remote."""
    from tvc.remote.config import remove_remote

    remove_remote(_regdir(None), name)
    common.out.print(f"Removed remote {name}")


def _report(t, json_: bool) -> None:
    if json_:
        common.emit_json(t.to_json())
        return
    verb = {"push": "Pushed", "pull": "Pulled", "fetch": "Fetched", "clone": "Cloned"}
    common.out.print(
        f"{verb.get(t.direction, t.direction)} {t.versions} version(s): {t.objects_sent} "
        f"object(s), {common.human_bytes(t.bytes_sent)} in {t.packs} pack(s); "
        f"{t.objects_skipped} already there",
        markup=False,
    )
    for r in t.renumbered:
        common.out.print(
            f"  {r['model']}@v{r['here']} here is {r['model']}@v{r['there']} on the remote "
            f"({r['id'][:12]})",
            markup=False,
        )
    for b in t.branches:
        if "new" in b:
            old = b["old"][:12] if b.get("old") else "(new)"
            status = f" ({b['status']})" if b.get("status") else ""
            common.out.print(
                f"  {b['model']}@{b['branch']}: {old} -> {b['new'][:12]}{status}", markup=False
            )
        elif "remote" in b:
            common.out.print(
                f"  {b['model']}@{b['branch']} on the remote: {b['remote'][:12]}", markup=False
            )


def clone(
    src: str = typer.Argument(..., help="A registry path or an http(s):// URL."),
    dest: str = typer.Argument(None, help="New registry directory (default: the source's name)."),
    model: list[str] = typer.Option(None, "--model", help="Only this model (repeatable)."),
    lazy: bool = typer.Option(False, "--lazy", help="Metadata only; chunks come when read."),
    quiet: bool = QuietOpt,
    json_: bool = JsonOpt,
) -> None:
    """Copy a registry: every version, branch and tag; `origin` points at the source."""
    from tvc.remote import clone as clone_

    target = dest or Path(src.rstrip("/")).name or "registry"
    t, reg = clone_(src, target, models=model or [], lazy=lazy, progress=common.RichProgress(quiet))
    reg.close()
    t.direction = "clone"
    _report(t, json_)


def _remote_and_specs(remote: str | None, specs: list[str] | None):
    """``push [REMOTE] [MODEL]...``: the first word is a remote if one is known by that name
    (or it is a path or URL), else a model and the remote is origin."""
    from tvc.remote.config import remote_url, remotes

    regdir = _regdir(None)
    specs = list(specs or [])
    if remote is not None and (
        remote in remotes(regdir) or "/" in remote or "://" in remote or remote == "."
    ):
        return remote_url(regdir, remote), specs
    if remote is not None:
        specs.insert(0, remote)
    return remote_url(regdir, None), specs


def push(
    remote: str = typer.Argument(None, help="Remote name, path or URL (default: origin)."),
    specs: list[str] = typer.Argument(None, help="MODEL[@BRANCH] to push (default: all)."),
    all_: bool = typer.Option(False, "--all", help="Every branch of every model."),
    force: bool = typer.Option(False, "--force", help="Overwrite a diverged remote branch."),
    quiet: bool = QuietOpt,
    json_: bool = JsonOpt,
) -> None:
    """Send versions the remote lacks and move its branches (fast-forward only)."""
    from tvc.remote import open_transport
    from tvc.remote import push as push_

    where, specs = _remote_and_specs(remote, specs)
    with common.open_registry() as reg, open_transport(where) as rem:
        t = push_(reg, rem, specs, all_=all_, force=force, progress=common.RichProgress(quiet))
    _report(t, json_)


def pull(
    remote: str = typer.Argument(None, help="Remote name, path or URL (default: origin)."),
    specs: list[str] = typer.Argument(None, help="MODEL[@BRANCH] to pull (default: all)."),
    force: bool = typer.Option(False, "--force", help="Overwrite a diverged local branch."),
    quiet: bool = QuietOpt,
    json_: bool = JsonOpt,
) -> None:
    """Bring the remote's versions here and fast-forward local branches to its."""
    from tvc.remote import open_transport
    from tvc.remote import pull as pull_

    where, specs = _remote_and_specs(remote, specs)
    with common.open_registry() as reg, open_transport(where) as rem:
        t = pull_(reg, rem, specs, force=force, progress=common.RichProgress(quiet))
    _report(t, json_)


def fetch(
    remote: str = typer.Argument(None, help="Remote name, path or URL (default: origin)."),
    specs: list[str] = typer.Argument(None, help="MODEL[@BRANCH] to fetch (default: all)."),
    fill: str = typer.Option(None, "--fill", help="A lazy clone: fetch every chunk of REF."),
    quiet: bool = QuietOpt,
    json_: bool = JsonOpt,
) -> None:
    """Bring the remote's versions here without moving local branches."""
    from tvc.remote import fetch as fetch_
    from tvc.remote import open_transport

    if fill:
        with common.open_registry() as reg:
            t = reg.fill(fill)
        _report(t, json_)
        return

    where, specs = _remote_and_specs(remote, specs)
    with common.open_registry() as reg, open_transport(where) as rem:
        t = fetch_(reg, rem, specs, progress=common.RichProgress(quiet))
    _report(t, json_)
