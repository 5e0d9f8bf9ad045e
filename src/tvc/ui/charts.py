"""Charts drawn on the server as inline SVG: they need no script and no library, print and
scale with the page, and take their colours from the page's CSS (light and dark alike).

Every function returns markup (``markupsafe.Markup``) whose user data — metric names, refs,
messages — is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

MAX_LINKED = 400  # points of a metric chart drawn as links (every k-th beyond that)
ROW = 30  # px per row of the version table (the graph column lines up with it)
LANE = 14


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def metric_chart(
    name: str, points: list[tuple[int, str, float]], href: Callable[[int], str]
) -> Markup:
    """One metric across versions: a line through ``(number, id, value)`` points, each point a
    link to its version with the value in its tooltip (up to ``MAX_LINKED`` of them: on a
    model of thousands of versions every k-th, the line still through all)."""
    w, h, left, right, top, bottom = 640, 180, 56, 12, 12, 26
    if not points:
        return Markup("")
    xs = [p[0] for p in points]
    ys = [p[2] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - (abs(y0) or 1) * 0.05, y1 + (abs(y1) or 1) * 0.05
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom)

    parts = [
        f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="{escape(name)} across versions">'
    ]
    for i in range(5):  # horizontal grid with values
        y = y0 + (y1 - y0) * i / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{w - right}" y1="{_num(py(y))}" '
            f'y2="{_num(py(y))}"/><text class="tick" x="{left - 6}" y="{_num(py(y) + 4)}" '
            f'text-anchor="end">{escape(f"{y:.4g}")}</text>'
        )
    for x in sorted({x0, x1, *xs[:: max(1, len(xs) // 6)]}):
        if x == int(x) and x0 <= x <= x1:
            parts.append(
                f'<text class="tick" x="{_num(px(x))}" y="{h - 8}" '
                f'text-anchor="middle">v{int(x)}</text>'
            )
    line = " ".join(f"{_num(px(x))},{_num(py(y))}" for x, _i, y in points)
    parts.append(f'<polyline class="series" points="{line}"/>')
    r = 3.5 if len(points) <= 200 else 2
    step = math.ceil(len(points) / MAX_LINKED)  # beyond that, points closer than a pixel
    linked = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
    for x, _vid, y in linked:
        parts.append(
            f'<a href="{escape(href(x))}"><circle class="point" cx="{_num(px(x))}" '
            f'cy="{_num(py(y))}" r="{r}"><title>v{x}: {escape(name)} = {escape(f"{y:.6g}")}'
            "</title></circle></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def version_graph(rows: list[tuple[str, tuple[str, ...]]]) -> tuple[Markup, int]:
    """Branches and merges of the rows shown (``(id, parents)``, newest first), one row per
    ``ROW`` pixels, as ``git log --graph`` lays them out: a version takes the lane that waits
    for it, its first parent continues that lane, other parents open lanes of their own.
    Returns the SVG and the number of lanes. Parents below the page run off its bottom."""
    lanes: list[str | None] = []
    place: dict[str, tuple[int, int]] = {}
    edges: list[tuple[int, int, str]] = []  # (row, lane, parent id)
    for i, (vid, parents) in enumerate(rows):
        if vid in lanes:
            lane = lanes.index(vid)
            for j, other in enumerate(lanes):  # merged lanes waiting for the same version end
                if other == vid and j != lane:
                    lanes[j] = None
        else:
            lane = lanes.index(None) if None in lanes else len(lanes)
            if lane == len(lanes):
                lanes.append(None)
        place[vid] = (i, lane)
        lanes[lane] = parents[0] if parents else None
        for p in parents[1:]:
            if p not in lanes:
                j = lanes.index(None) if None in lanes else len(lanes)
                if j == len(lanes):
                    lanes.append(p)
                else:
                    lanes[j] = p
        for p in parents:
            edges.append((i, lane, p))
        while lanes and lanes[-1] is None:
            lanes.pop()
    first = [ps[0] if ps else None for _v, ps in rows]
    width = max(1, max((lane for _i, lane in place.values()), default=0) + 1)
    width = max(width, 1)
    n = len(rows)
    w, h = width * LANE + 8, n * ROW

    def cx(lane: int) -> float:
        return 8 + lane * LANE

    def cy(row: int) -> float:
        return row * ROW + ROW / 2

    parts = [
        f'<svg class="vgraph" width="{w}" height="{h}" viewBox="0 0 {w} {h}" aria-hidden="true">'
    ]
    for row, lane, p in edges:
        if p in place:
            prow, plane = place[p]
            lane_x, plane_x = cx(lane), cx(plane)
            if lane == plane:
                d = f"M{lane_x},{cy(row)} L{plane_x},{cy(prow)}"
            elif p != first[row]:  # a merge's other parent: over to its lane at once, then down
                d = f"M{lane_x},{cy(row)} L{plane_x},{cy(row) + ROW / 2} L{plane_x},{cy(prow)}"
            else:  # a branch: down its own lane, into the parent's just above it
                mid = cy(prow) - ROW / 2
                d = f"M{lane_x},{cy(row)} L{lane_x},{mid} L{plane_x},{cy(prow)}"
        else:  # the parent is on a later page
            d = f"M{cx(lane)},{cy(row)} L{cx(lane)},{h}"
        parts.append(f'<path class="edge lane{lane % 6}" d="{d}"/>')
    for vid, (row, lane) in place.items():
        merge = " merge" if any(len(ps) > 1 for v, ps in rows if v == vid) else ""
        parts.append(
            f'<circle class="node lane{lane % 6}{merge}" cx="{cx(lane)}" cy="{cy(row)}" r="4.5"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts)), width


def lineage_graph(graph: dict[str, Any], href: Callable[[dict[str, Any]], str | None]) -> Markup:
    """A lineage (``Lineage.to_json()``) drawn left to right: the version, then its inputs one
    column per step back (parents, base models, data sets, code), edges labelled by kind."""
    nodes = {n["key"]: n for n in graph["nodes"]}
    depth = {graph["root"]: 0}
    order = [graph["root"]]
    for key in order:  # breadth first: a node's column is its shortest distance from the root
        for e in graph["edges"]:
            if e["from"] == key and e["to"] not in depth and e["to"] in nodes:
                depth[e["to"]] = depth[key] + 1
                order.append(e["to"])
    columns: dict[int, list[str]] = {}
    for key in order:
        columns.setdefault(depth[key], []).append(key)
    bw, bh, gx, gy = 210, 46, 60, 14
    pos = {
        key: (12 + d * (bw + gx), 12 + i * (bh + gy))
        for d, keys in columns.items()
        for i, key in enumerate(keys)
    }
    w = 24 + len(columns) * (bw + gx) - gx
    h = 24 + max(len(k) for k in columns.values()) * (bh + gy) - gy
    parts = [f'<svg class="lineage" width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
    labelled: set[tuple[str, str]] = set()
    for e in graph["edges"]:
        if e["from"] not in pos or e["to"] not in pos:
            continue
        (x1, y1), (x2, y2) = pos[e["from"]], pos[e["to"]]
        sx, sy, tx, ty = x1 + bw, y1 + bh / 2, x2, y2 + bh / 2
        if x2 <= x1:  # an input already drawn in an earlier column: loop under the boxes
            sx, tx = x1 + bw / 2, x2 + bw / 2
            sy, ty = y1 + bh, y2 + bh
            d = f"M{sx},{sy} C{sx},{sy + 30} {tx},{ty + 30} {tx},{ty}"
        else:
            mx = (sx + tx) / 2
            d = f"M{sx},{sy} C{mx},{sy} {mx},{ty} {tx},{ty}"
        label = e["kind"] + (f" {e['name']}" if e.get("name") and e["kind"] != "parent" else "")
        parts.append(f'<path class="edge" d="{d}"/>')
        if (e["to"], label) not in labelled and x2 > x1:  # once per input, at its end
            labelled.add((e["to"], label))
            parts.append(
                f'<text class="elabel" x="{_num(tx - 5)}" y="{_num(ty - 5)}" '
                f'text-anchor="end">{escape(label)}</text>'
            )
    for key, (x, y) in pos.items():
        n = nodes[key]
        if n["kind"] == "version":
            title, sub = n["ref"], f"{n['id'][:12]} · {n['state']}"
        elif n["kind"] == "dataset":
            title = f"data set {n.get('name', '')}"
            sub = f"blake3:{str(n['digest'])[:12]}" if n.get("digest") else str(n.get("id", ""))
        elif n["kind"] == "hidden":
            title, sub = "(a model you may not read)", ""
        else:
            title = f"git {str(n.get('commit'))[:12]}"
            sub = " ".join(str(x) for x in (n.get("branch"), n.get("remote")) if x)
            sub += " (dirty)" if n.get("dirty") else ""
        root = " root" if key == graph["root"] else ""
        box = (
            f'<rect class="box {escape(n["kind"])}{root}" x="{x}" y="{y}" width="{bw}" '
            f'height="{bh}" rx="6"/><text class="t1" x="{x + 10}" y="{y + 19}">'
            f'{escape(title[:30])}</text><text class="t2" x="{x + 10}" y="{y + 36}">'
            f"{escape(sub[:34])}</text>"
        )
        link = href(n)
        parts.append(f'<a href="{escape(link)}">{box}</a>' if link else box)
    parts.append("</svg>")
    return Markup("".join(parts))


def bar(fraction: float) -> Markup:
    """A horizontal bar filling ``fraction`` of its cell (SVG: no inline style, which the
    pages' Content-Security-Policy forbids)."""
    f = min(1.0, max(0.0, fraction))
    return Markup(
        '<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect width="{max(f * 100, 0.4):.2f}" height="10"/></svg>'
    )


def layer_of(name: str) -> str:
    """The layer a tensor belongs to: its name without the last dotted part
    (``encoder.layer.3.attn.q.weight`` → ``encoder.layer.3.attn.q``)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def layer_changes(tensors: list[Any]) -> list[dict[str, Any]]:
    """Relative L2 change per layer, largest first: ‖B−A‖ over ‖A‖ of all its changed tensors
    taken together (tensors without statistics — added, removed, reshaped — are left out)."""
    acc: dict[str, list[float]] = {}
    for t in tensors:
        if t.l2 is None or t.norm_a is None:
            continue
        a = acc.setdefault(layer_of(t.name), [0.0, 0.0, 0])
        a[0] += t.l2**2
        a[1] += t.norm_a**2
        a[2] += 1
    out = [
        {"layer": k, "rel_l2": math.sqrt(d) / math.sqrt(n) if n else None, "tensors": c}
        for k, (d, n, c) in acc.items()
    ]
    out.sort(key=lambda r: (r["rel_l2"] is None, -(r["rel_l2"] or 0.0), r["layer"]))
    return out
