"""Model-registry commands: metric, alias, rollback, lifecycle, search, lineage, audit."""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

import typer

from tvc.cli import common
from tvc.cli.common import JsonOpt, shown

if TYPE_CHECKING:
    from tvc.registry import AliasEvent, Lineage, StateEvent

alias_app = typer.Typer(
    help="Movable names (production, staging) with every move recorded.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
lifecycle_app = typer.Typer(
    help="Lifecycle states of versions: transitions, gates, audit log.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ReasonOpt = typer.Option("", "--reason", "-r", help="Why (kept in the audit log).")
ForceOpt = typer.Option(
    False, "--force", "-f", help="Override an illegal transition or a failed gate (recorded)."
)


def register(app: typer.Typer) -> None:
    app.command("metric")(metric)
    app.add_typer(alias_app, name="alias")
    app.command("rollback")(rollback)
    app.add_typer(lifecycle_app, name="lifecycle")
    app.command("search")(search)
    app.command("lineage")(lineage)
    app.command("audit")(audit)


def _query_errors(fn):
    """Show a query syntax error as one line plus the query with a caret under the spot."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from tvc.registry.query import QuerySyntaxError

        try:
            return fn(*args, **kwargs)
        except QuerySyntaxError as exc:
            caret = "\n".join(shown(line) for line in exc.caret().splitlines())
            sys.stderr.write(f"tvc: error: {shown(exc.headline)}\n{caret}\n")
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _p(text: str) -> None:
    common.out.print(text, markup=False)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    """Plain aligned columns that never wrap (pipes and narrow terminals alike); cells are user
    data, their control characters and line breaks escaped."""
    rows = [[shown(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        _p("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


# -- metric ----------------------------------------------------------------------------------
def metric(
    ref: str = typer.Argument(..., help="MODEL@REF"),
    pairs: list[str] = typer.Argument(None, help="KEY=VALUE to add (omit to list)."),
    reason: str = ReasonOpt,
    json_: bool = JsonOpt,
) -> None:
    """Add evaluation metrics to an existing version (its id does not change), or list them."""
    with common.open_registry() as reg:
        if pairs:
            v = reg.add_metrics(ref, common.parse_pairs(pairs, "metric"), reason=reason)
        else:
            v = reg.resolve(ref)
        committed = reg.committed_metrics(v.ref)
        history = reg.metric_history(v.ref)
    if json_:
        common.emit_json(
            {
                "ref": v.ref,
                "id": v.id,
                "metrics": v.metrics,
                "committed": committed,
                "history": [e.to_json() for e in history],
            }
        )
        return
    if pairs:
        _p(
            f"{v.ref} {v.short_id}: "
            + " ".join(f"{shown(k)}={shown(x)}" for k, x in v.metrics.items())
        )
        return
    last: dict[str, Any] = {}
    for e in history:
        for k in e.metrics:
            last[k] = e
    rows = []
    for k, x in v.metrics.items():
        e = last.get(k)
        how = f"{common.when(e.at)} {e.actor}" + (f": {e.reason}" if e.reason else "") if e else ""
        rows.append([k, str(x), how or "at commit"])
    _table(["metric", "value", "recorded"], rows)


# -- aliases ---------------------------------------------------------------------------------
def _move_line(e: AliasEvent) -> str:
    flags = [f for f, on in (("rollback", e.rollback), ("forced", e.forced)) if on]
    extra = f" [{', '.join(flags)}]" if flags else ""
    why = f"  ({shown(e.reason)})" if e.reason else ""
    return f"{e.model}@{shown(e.alias)}: {e.old or '-'} → {e.new or '-'}{extra}{why}"


@alias_app.command("set")
@_query_errors
def alias_set(
    model: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias name, e.g. production."),
    ref: str = typer.Argument(..., help="Version to point at: v3, a branch, tag or id."),
    reason: str = ReasonOpt,
    force: bool = ForceOpt,
    json_: bool = JsonOpt,
) -> None:
    """Point ALIAS at REF; a gate of the same name must pass unless --force."""
    with common.open_registry() as reg:
        e = reg.set_alias(model, alias, ref, reason=reason, force=force)
        if e is None:
            v = reg.resolve(f"{model}@{alias}")
    if json_:
        common.emit_json(e.to_json() if e else {"model": model, "alias": alias, "to": v.ref})
    elif e is None:
        _p(f"{shown(model)}@{shown(alias)} already points at {v.ref}")
    else:
        _p(_move_line(e))


@alias_app.command("list")
def alias_list(
    model: str = typer.Argument(..., help="Model name."),
    json_: bool = JsonOpt,
) -> None:
    """Current aliases of MODEL, with when, who and why each was last moved."""
    with common.open_registry() as reg:
        rows = reg.aliases(model)
    if json_:
        common.emit_json(rows)
        return
    _table(
        ["alias", "version", "id", "state", "since (UTC)", "by", "reason"],
        [
            [
                r["alias"],
                r["version"],
                r["id"][:12],
                r["state"],
                (r["since"] or "-")[:16].replace("T", " "),
                r["actor"] or "-",
                r["reason"] or "",
            ]
            for r in rows
        ],
    )


@alias_app.command("history")
def alias_history(
    model: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias name."),
    json_: bool = JsonOpt,
) -> None:
    """Every move of ALIAS, oldest first: when, who, from, to, why, forced, rollback."""
    with common.open_registry() as reg:
        events = reg.alias_history(model, alias)
    if json_:
        common.emit_json([e.to_json() for e in events])
        return
    for e in events:
        _p(f"{common.when(e.at)}  {shown(e.actor):<16} {_move_line(e)}")


@alias_app.command("rm")
def alias_rm(
    model: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias name."),
    reason: str = ReasonOpt,
    json_: bool = JsonOpt,
) -> None:
    """Remove ALIAS (recorded; `tvc rollback` restores it)."""
    with common.open_registry() as reg:
        e = reg.remove_alias(model, alias, reason=reason)
    if json_:
        common.emit_json(e.to_json())
    else:
        _p(f"Removed {shown(model)}@{shown(alias)} (was {e.old})")


@_query_errors
def rollback(
    model: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias to move back."),
    to: str = typer.Option(None, "--to", help="Move to this version instead of the previous."),
    reason: str = ReasonOpt,
    force: bool = ForceOpt,
    json_: bool = JsonOpt,
) -> None:
    """Move ALIAS back to its previous target (again: further back), or to --to REF."""
    with common.open_registry() as reg:
        e = reg.rollback(model, alias, to=to, reason=reason, force=force)
    if json_:
        common.emit_json(e.to_json())
    else:
        _p(_move_line(e))


# -- lifecycle -------------------------------------------------------------------------------
def _state_line(e: StateEvent) -> str:
    forced = f" [forced: {shown(e.overridden)}]" if e.forced else ""
    why = f"  ({shown(e.reason)})" if e.reason else ""
    return f"{e.ref}: {shown(e.old)} → {shown(e.new)}{forced}{why}"


@lifecycle_app.command("set")
@_query_errors
def lifecycle_set(
    ref: str = typer.Argument(..., help="MODEL@REF"),
    state: str = typer.Argument(..., help="The new state."),
    reason: str = ReasonOpt,
    force: bool = ForceOpt,
    json_: bool = JsonOpt,
) -> None:
    """Move a version to STATE: refused if the lifecycle forbids it or its gate fails."""
    with common.open_registry() as reg:
        e = reg.set_state(ref, state, reason=reason, force=force)
        v = reg.resolve(ref) if e is None else None
    if json_:
        common.emit_json(e.to_json() if e else {"ref": v.ref, "id": v.id, "to": v.state})
    elif e is None:
        _p(f"{v.ref} is already {shown(v.state)}")
    else:
        _p(_state_line(e))


@lifecycle_app.command("history")
def lifecycle_history(
    target: str = typer.Argument(..., help="MODEL (all its versions) or MODEL@REF."),
    json_: bool = JsonOpt,
) -> None:
    """The audit log of state transitions, oldest first."""
    with common.open_registry() as reg:
        events = reg.state_history(target)
    if json_:
        common.emit_json([e.to_json() for e in events])
        return
    for e in events:
        _p(f"{common.when(e.at)}  {shown(e.actor):<16} {_state_line(e)}")


@lifecycle_app.command("states")
@_query_errors
def lifecycle_states(json_: bool = JsonOpt) -> None:
    """The state machine (and gates) this registry uses."""
    with common.open_registry() as reg:
        lc = reg.lifecycle()
    if json_:
        common.emit_json(lc.to_json())
        return
    for st in lc.states:
        nxt = ", ".join(lc.allowed(st)) or "-"
        _p(f"{st:<12} → {nxt}")
    if lc.gates:
        _p("gates:")
        for name, qs in lc.gates.items():
            for q in qs:
                _p(f"  {name}: {q.text}")


# -- search ----------------------------------------------------------------------------------
def _summary(d: dict[str, Any], n: int = 4) -> str:
    items = list(d.items())
    text = " ".join(f"{shown(k)}={shown(v)}" for k, v in items[:n])
    return text + (" …" if len(items) > n else "")


@_query_errors
def search(
    query: str = typer.Argument("", help='e.g. "metrics.acc >= 0.9 and state = evaluated"'),
    model: str = typer.Option(None, "--model", "-m", help="Only this model."),
    order_by: list[str] = typer.Option(
        None, "--order-by", "-o", help="KEY or -KEY (descending), e.g. -metrics.acc."
    ),
    limit: int = typer.Option(
        50, "--limit", "-n", min=0, max=common.MAX_COUNT, help="At most N versions (0: all)."
    ),
    json_: bool = JsonOpt,
) -> None:
    """Versions of every model matching QUERY (see README: fields, operators, values)."""
    with common.open_registry() as reg:
        found = reg.search(query, model=model, order_by=order_by or None, limit=limit or None)
        refs = reg.refs_of_versions([v.id for v in found])
    if json_:
        docs = []
        for v in found:
            d = v.to_json()
            d.pop("files")
            d["refs"] = [{"kind": k, "name": n} for k, n in refs.get(v.id, [])]
            docs.append(d)
        common.emit_json(docs)
        return
    if not found:
        sys.stderr.write("no versions match\n")
        return
    _table(
        ["version", "id", "state", "created", "metrics", "params", "refs"],
        [
            [
                v.ref,
                v.short_id,
                v.state,
                common.when(v.created),
                _summary(v.metrics),
                _summary(v.params),
                ", ".join(n if k == "branch" else f"{k}: {n}" for k, n in refs.get(v.id, [])),
            ]
            for v in found
        ],
    )
    if limit and len(found) == limit:
        sys.stderr.write(f"(first {limit}; --limit 0 for all)\n")


# -- lineage ---------------------------------------------------------------------------------
def _node_label(node: dict[str, Any]) -> str:
    kind = node["kind"]
    if kind == "version":
        msg = node["message"].splitlines()[0] if node["message"] else ""
        label = f"{node['ref']} {node['id'][:12]} [{node['state']}] {msg}".rstrip()
    elif kind == "dataset":
        if node.get("digest"):
            size = common.human_bytes(node.get("size"))
            label = f"{node.get('path')} blake3:{str(node['digest'])[:12]} ({size})"
        else:
            label = f"{node.get('id')}"
    else:
        dirty = " (dirty)" if node.get("dirty") else ""
        where = " ".join(x for x in (node.get("branch"), node.get("remote")) if x)
        label = f"git {str(node.get('commit'))[:12]}{dirty} {where}".rstrip()
    return shown(label)


def render_lineage(graph: Lineage) -> list[str]:
    """The graph as an indented tree; a version met again is shown once, then referred to."""
    lines = [_node_label(graph.nodes[graph.root])]
    seen = {graph.root}
    truncated = set(graph.truncated)

    def walk(key: str, prefix: str) -> None:
        edges = graph.inputs(key)
        for i, e in enumerate(edges):
            last = i == len(edges) - 1
            node = graph.nodes[e["to"]]
            label = e["kind"]
            if e["kind"] == "dataset" or (e["kind"] == "parent" and e["name"] != "first"):
                label = f"{e['kind']} {shown(e['name'])}"
            if e["kind"] == "dataset" and e.get("record", {}).get("digest"):
                label += f" ({_node_label({'kind': 'dataset', **e['record']})})"
            again = node["kind"] == "version" and e["to"] in seen
            more = " …" if e["to"] in truncated else ""
            tail = " (see above)" if again else more
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label}: {_node_label(node)}{tail}")
            if node["kind"] == "version" and not again:
                seen.add(e["to"])
                walk(e["to"], prefix + ("    " if last else "│   "))

    walk(graph.root, "")
    return lines


def lineage(
    ref: str = typer.Argument(..., help="MODEL@REF"),
    depth: int = typer.Option(
        None, "--depth", "-d", min=0, max=common.MAX_COUNT, help="Follow versions N levels deep."
    ),
    json_: bool = JsonOpt,
) -> None:
    """What REF was made from: parents, base models (recursively), data sets, code commit."""
    with common.open_registry() as reg:
        graph = reg.lineage(ref, depth=depth)
    if json_:
        common.emit_json(graph.to_json())
        return
    for line in render_lineage(graph):
        _p(line)
    if graph.truncated:
        _p("(… inputs not shown: raise --depth)")


# -- audit -----------------------------------------------------------------------------------
def audit(
    model: str = typer.Argument(None, help="Only this model."),
    n: int = typer.Option(
        None, "-n", "--max-count", min=0, max=common.MAX_COUNT, help="At most N entries."
    ),
    json_: bool = JsonOpt,
) -> None:
    """Everything recorded, newest first: alias moves, transitions, metrics, tags, branches."""
    with common.open_registry() as reg:
        entries = reg.audit(model, n)
    if json_:
        common.emit_json(entries)
        return
    for e in entries:
        when = e["at"][:19].replace("T", " ")
        if e["kind"] == "metrics":
            what = f"metrics {shown(e['name'])}: {_summary(e['to'], 8)}"
        elif e["kind"] == "state":
            what = shown(f"state {e['name']}: {e['from']} → {e['to']}")
        else:
            model_ = e["model"]
            what = shown(f"{e['kind']} {model_}@{e['name']}: {e['from'] or '-'} → {e['to'] or '-'}")
        flags = [f for f in ("rollback", "forced") if e.get(f)]
        extra = f" [{', '.join(flags)}]" if flags else ""
        why = f"  ({shown(e['reason'])})" if e["reason"] else ""
        _p(f"{when} UTC  {shown(e['actor']):<16} {what}{extra}{why}")
