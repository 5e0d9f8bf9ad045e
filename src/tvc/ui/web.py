"""The pages and actions of the web UI, as FastAPI routes rendered on the server (Jinja2).

Reading needs no script: charts are inline SVG, filters and metric choices are GET forms, and
the little JavaScript there is (``static/tvc.js``: sortable tables, a live tensor filter, the
copy button) only adds to pages that work without it. Every page reads through the registry's
functions and the batch queries of :mod:`tvc.registry.batch`, never a query per row; long
lists are paginated. Actions call the registry's own functions — gates, legal transitions and
audit are theirs — as the viewer (:func:`tvc.repo.meta.acting_as`).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from tvc import errors
from tvc.registry import batch
from tvc.registry.query import QuerySyntaxError
from tvc.repo.meta import acting_as
from tvc.repo.version import iso
from tvc.ui import charts
from tvc.ui.auth import COOKIE, Auth, Forbidden, Viewer

HERE = Path(__file__).parent
PER_PAGE = 100  # versions per page of the model page
TENSORS_PER_PAGE = 250
AUDIT_PER_PAGE = 200
FLASH = "tvc_flash"
MAX_FORM = 64 * 1024
# What an action may answer with a message on the page it came from (a gate, an illegal
# transition, a typo); anything else is an error page.
REFUSALS = (errors.ConflictError, errors.ExistsError, errors.UsageError, errors.RefError)


def error_json(exc: errors.TvcError) -> JSONResponse:
    """tvc's error as the server's API gives it: ``{"error", "exit_code"}``."""
    status, body, headers = errors.http_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    x = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x < 1000 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{n} B"


def when(ts: float | str | None) -> str:
    if ts is None:
        return "–"
    text = ts if isinstance(ts, str) else iso(ts)
    return text[:16].replace("T", " ")


def value(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (dict, list)):
        return json.dumps(x, sort_keys=True)
    return "–" if x is None else str(x)


def vlink(ref: str) -> str:
    return "/ui/v/" + quote(ref, safe="/@~")


def mlink(model: str) -> str:
    return "/ui/m/" + quote(model, safe="/")


class UI:
    """One registry seen through the browser; ``auth`` says who is looking."""

    def __init__(self, reg: Any, auth: Auth, *, server_url: Callable[[Request], str | None]):
        self.reg = reg
        self.auth = auth
        self.server_url = server_url
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            human_bytes=human_bytes,
            when=when,
            value=value,
            vlink=vlink,
            mlink=mlink,
            bar=charts.bar,
        )

    # -- plumbing -------------------------------------------------------------------------
    def render(self, request: Request, viewer: Viewer | None, name: str, **ctx: Any) -> Response:
        flash = None
        raw = request.cookies.get(FLASH)
        if raw:
            try:
                flash = json.loads(base64.urlsafe_b64decode(raw.encode()))
            except ValueError:
                flash = None
        html = self.env.get_template(name).render(
            request=request,
            viewer=viewer,
            login=self.auth.login,
            csrf=self.auth.csrf(viewer) if viewer else "",
            flash=flash,
            path=request.url.path,
            **ctx,
        )
        resp = HTMLResponse(html, status_code=ctx.get("status", 200))
        if raw:
            resp.delete_cookie(FLASH, path="/ui")
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        return resp

    @staticmethod
    def wants_html(request: Request) -> bool:
        return "text/html" in request.headers.get("accept", "")

    def failure(self, request: Request, exc: errors.TvcError, viewer: Viewer | None) -> Response:
        """A refusal as the client can read it: the login form or an HTML page for a browser,
        tvc's JSON error (with its exit code) for anything else."""
        status = errors.http_status(exc)
        if not self.wants_html(request):
            return error_json(exc)
        if status == 401 and self.auth.login:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/ui/login?" + urlencode({"next": target}), 303)
        return self.render(request, viewer, "error.html", error=exc.message, status=status)

    def page(self, request: Request, scope: str, build: Callable[[Viewer], Response]) -> Response:
        viewer = None
        try:
            viewer = self.auth.viewer(request)
            if not viewer.token.allows(scope):
                raise Forbidden(
                    f"{viewer.name!r} has scope {viewer.token.scope}; this needs {scope}"
                )
            return build(viewer)
        except errors.TvcError as exc:
            return self.failure(request, exc, viewer)

    @staticmethod
    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM:
            raise errors.UsageError("form too large")
        if "json" in request.headers.get("content-type", ""):
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                raise errors.UsageError("malformed JSON body") from None
            return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    @staticmethod
    def need(form: dict[str, str], *keys: str) -> list[str]:
        out = []
        for k in keys:
            v = form.get(k, "").strip()
            if not v:
                raise errors.UsageError(f"missing {k}")
            out.append(v)
        return out

    def act(self, request: Request, form: dict[str, str], do: Callable[[Viewer], str]) -> Response:
        """Run an action for a viewer who may write; back to the page it came from, with what
        happened (or why it was refused) shown once."""
        back = form.get("back", "/ui/")
        if not back.startswith("/ui/") or back.startswith("//") or "\\" in back:
            back = "/ui/"
        viewer = None
        try:
            viewer = self.auth.viewer(request)
            if not viewer.can_write:
                raise Forbidden(f"{viewer.name!r} may only read")
            self.auth.check_post(request, viewer, form)
            with acting_as(viewer.name):
                message, ok = do(viewer), True
        except REFUSALS as exc:
            if viewer is None or not viewer.by_cookie or not self.visible(viewer, form, exc):
                return self.failure(request, exc, viewer)
            message, ok = f"refused: {exc.message}", False
        except errors.TvcError as exc:
            return self.failure(request, exc, viewer)
        if not viewer.by_cookie:
            return JSONResponse({"ok": ok, "message": message}, status_code=200 if ok else 409)
        resp = RedirectResponse(back, 303)
        flash = json.dumps({"ok": ok, "message": message}).encode()
        resp.set_cookie(
            FLASH,
            base64.urlsafe_b64encode(flash).decode(),
            max_age=60,
            path="/ui",
            httponly=True,
            samesite="strict",
        )
        return resp

    def visible(self, viewer: Viewer, form: dict[str, str], exc: errors.TvcError) -> bool:
        """Whether a refusal may be shown as a message on the page: not for a model the viewer
        may not read, nor for one that does not exist — both answer 404 alike, no oracle."""
        if not isinstance(exc, errors.RefError):
            return True
        model = form.get("model") or form.get("ref", "").split("@", 1)[0].split("~", 1)[0]
        return viewer.may_read(model) and any(m["model"] == model for m in self.reg.models())

    # -- pages ----------------------------------------------------------------------------
    def models_page(self, request: Request, viewer: Viewer) -> Response:
        q = request.query_params.get("q", "").strip()
        models = [m for m in batch.model_summaries(self.reg) if viewer.may_read(m["model"])]
        found, error, caret, refs = None, None, None, {}
        if q:
            try:
                hits = self.reg.search(q, limit=500)
            except QuerySyntaxError as exc:
                error, caret = exc.headline, exc.caret()
            else:
                found = [v for v in hits if viewer.may_read(v.model)][:200]
                refs = self.reg.refs_of_versions([v.id for v in found])
        return self.render(
            request,
            viewer,
            "models.html",
            title="Models",
            models=models,
            q=q,
            found=found,
            refs=refs,
            error=error,
            caret=caret,
        )

    def model_page(self, request: Request, viewer: Viewer, model: str) -> Response:
        viewer.readable(model)
        pg = max(1, _int(request.query_params.get("page"), 1))
        view = batch.model_view(self.reg, model, offset=(pg - 1) * PER_PAGE, limit=PER_PAGE)
        total, versions, series = view.total, view.versions, view.series
        graph, lanes = charts.version_graph([(v.id, v.parents) for v in versions])
        names = sorted(
            {
                k
                for _n, _i, m in series
                for k, x in m.items()
                if isinstance(x, (int, float)) and not isinstance(x, bool)
            }
        )
        chosen = [m for m in request.query_params.getlist("metric") if m in names]
        if not chosen and names:
            chosen = names[:1]
        plots = []
        for name in chosen:
            pts = [
                (n, vid, float(m[name]))
                for n, vid, m in series
                if isinstance(m.get(name), (int, float))
                and not isinstance(m.get(name), bool)
                and math.isfinite(m[name])
            ]
            plots.append((name, charts.metric_chart(name, pts, lambda n: vlink(f"{model}@v{n}"))))
        metric_keys = []
        for v in versions:
            for k in v.metrics:
                if k not in metric_keys:
                    metric_keys.append(k)
        return self.render(
            request,
            viewer,
            "model.html",
            title=model,
            model=model,
            versions=versions,
            refs=view.refs,
            new=view.new,
            graph=graph,
            lanes=lanes,
            row=charts.ROW,
            total=total,
            page=pg,
            pages=max(1, math.ceil(total / PER_PAGE)),
            names=names,
            chosen=chosen,
            plots=plots,
            metric_keys=metric_keys[:4],
            aliases=view.aliases,
        )

    def version_page(self, request: Request, viewer: Viewer, ref: str) -> Response:
        viewer.readable(ref.split("@", 1)[0].split("~", 1)[0])
        view = batch.version_view(self.reg, ref, depth=3)
        v, committed = view.version, view.committed
        later = {}
        for e in reversed(view.audit):  # oldest first: the last value set wins
            if e["kind"] == "metrics":
                for k in e["to"]:
                    later[k] = e
        flt = request.query_params.get("filter", "").strip()
        tensors = []
        formats = {}
        for f in v.files:
            m = self.reg.manifest(f.manifest_id)
            formats[f.path] = len(m.tensors)
            for t in m.tensors:
                if flt and flt.lower() not in t.name.lower():
                    continue
                tensors.append((f.path, t, math.prod(t.shape)))
        n_tensors = len(tensors)
        pg = max(1, _int(request.query_params.get("page"), 1))
        pages = max(1, math.ceil(n_tensors / TENSORS_PER_PAGE))
        shown = tensors[(pg - 1) * TENSORS_PER_PAGE : pg * TENSORS_PER_PAGE]
        graph = view.lineage.to_json()
        for n in graph["nodes"]:  # another model's version: shown as hidden, inputs dropped
            if n["kind"] == "version" and not viewer.may_read(n["model"]):
                key = n["key"]
                n.clear()
                n.update(key=key, kind="hidden")
        hidden = {n["key"] for n in graph["nodes"] if n["kind"] == "hidden"}
        graph["edges"] = [e for e in graph["edges"] if e["from"] not in hidden]
        parents = [view.known[p].ref for p in v.parents]  # the lineage loaded them
        base = None
        if v.base and v.base in view.known:
            bv = view.known[v.base]
            base = bv.ref if viewer.may_read(bv.model) else None
        audit = view.audit
        lc = self.reg.lifecycle_machine()
        url = self.server_url(request)
        target = v.model.rsplit("/", 1)[-1] + f"-v{v.number}"
        checkout = f"tvc checkout {v.ref} ./{target}"
        if url:
            checkout = f"tvc -R {url} checkout {v.ref} ./{target}"
        return self.render(
            request,
            viewer,
            "version.html",
            title=v.ref,
            v=v,
            refs=view.refs,
            committed=committed,
            later=later,
            tensors=shown,
            n_tensors=n_tensors,
            all_tensors=sum(formats.values()),
            flt=flt,
            page=pg,
            pages=pages,
            lineage=charts.lineage_graph(
                graph, lambda n: vlink(n["ref"]) if n["kind"] == "version" else None
            ),
            base=base,
            parents=parents,
            audit=audit,
            checkout=checkout,
            next_states=lc.allowed(v.state),
            aliases=[a["alias"] for a in view.aliases],
        )

    def compare_page(self, request: Request, viewer: Viewer) -> Response:
        a = request.query_params.get("a", "").strip()
        b = request.query_params.get("b", "").strip()
        ctx: dict[str, Any] = {"a": a, "b": b, "diff": None}
        if a and b:
            for ref in (a, b):
                viewer.readable(ref.split("@", 1)[0].split("~", 1)[0])
            from tvc.analysis import blame_version, diff_versions

            va, vb = batch.versions_for(self.reg, [a, b])  # each ref resolved once
            diff = diff_versions(self.reg, va, vb)
            blame = blame_version(self.reg, vb)
            blamed = {(e.path, e.name): e for e in blame.tensors}
            order = {"changed": 0, "shape_changed": 1, "dtype_changed": 2, "added": 3}
            order.update({"removed": 4, "unchanged": 5})
            rows = sorted(
                diff.tensors,
                key=lambda t: (order[t.status], -(t.rel_l2 or 0.0), t.path, t.name),
            )
            top = max((t.rel_l2 or 0.0 for t in rows), default=0.0) or 1.0
            layers = charts.layer_changes(diff.tensors)
            ltop = max((r["rel_l2"] or 0.0 for r in layers), default=0.0) or 1.0
            show_all = request.query_params.get("all") == "1"
            visible = rows if show_all else [t for t in rows if t.status != "unchanged"]
            ctx.update(
                diff=diff,
                counts=diff.counts()["tensors"],
                tensors=visible,
                hidden_unchanged=len(rows) - len(visible),
                top=top,
                layers=layers,
                ltop=ltop,
                blamed={k: e for k, e in blamed.items() if viewer.may_read(e.version.model)},
            )
            ctx["title"] = f"{diff.a.ref} ↔ {diff.b.ref}"
        return self.render(request, viewer, "compare.html", **{"title": "Compare", **ctx})

    def audit_page(self, request: Request, viewer: Viewer) -> Response:
        qp = request.query_params
        model = qp.get("model", "").strip() or None
        kind = qp.get("kind", "").strip() or None
        actor = qp.get("actor", "").strip() or None
        if model:
            viewer.readable(model)
        # the filters' choices and the totals from one grouped query, then one page of entries
        # filtered, ordered and paged in SQL: never the whole log
        pg = max(1, _int(qp.get("page"), 1))
        view = batch.audit_view(
            self.reg,
            model,
            kind=kind,
            actor=actor,
            offset=(pg - 1) * AUDIT_PER_PAGE,
            limit=AUDIT_PER_PAGE,
            may_read=viewer.may_read,
        )
        kinds = sorted({k for _m, k, _a, _n in view.facets})
        actors = sorted({a for _m, _k, a, _n in view.facets})
        models = sorted({m for m, _k, _a, _n in view.facets})
        entries, total = view.entries, view.total
        pages = max(1, math.ceil(total / AUDIT_PER_PAGE))
        return self.render(
            request,
            viewer,
            "audit.html",
            title="Audit",
            entries=entries,
            total=total,
            page=pg,
            pages=pages,
            kinds=kinds,
            actors=actors,
            models=models,
            sel={"model": model or "", "kind": kind or "", "actor": actor or ""},
        )

    # -- actions --------------------------------------------------------------------------
    def move_alias(self, viewer: Viewer, form: dict[str, str]) -> str:
        model, alias, ref = self.need(form, "model", "alias", "ref")
        viewer.readable(model)
        e = self.reg.set_alias(model, alias, ref, reason=form.get("reason", ""))
        if e is None:
            return f"{model}@{alias} already points at {ref}"
        return f"{model}@{alias}: {e.old or '–'} → {e.new}"

    def rollback(self, viewer: Viewer, form: dict[str, str]) -> str:
        model, alias = self.need(form, "model", "alias")
        viewer.readable(model)
        to = form.get("to", "").strip() or None
        e = self.reg.rollback(model, alias, to=to, reason=form.get("reason", ""))
        return f"rolled back {model}@{alias}: {e.old or '–'} → {e.new}"

    def transition(self, viewer: Viewer, form: dict[str, str]) -> str:
        ref, state = self.need(form, "ref", "state")
        viewer.readable(ref.split("@", 1)[0])
        e = self.reg.set_state(ref, state, reason=form.get("reason", ""))
        if e is None:
            return f"{ref} is already {state}"
        return f"{e.ref}: {e.old} → {e.new}"

    def add_metric(self, viewer: Viewer, form: dict[str, str]) -> str:
        ref, key, raw = self.need(form, "ref", "key", "value")
        viewer.readable(ref.split("@", 1)[0])
        try:
            number: Any = int(raw)
        except ValueError:
            try:
                number = float(raw)
            except ValueError:
                raise errors.UsageError(f"metric {key}: {raw!r} is not a number") from None
        v = self.reg.add_metrics(ref, {key: number}, reason=form.get("reason", ""))
        return f"{v.ref}: {key} = {number}"


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def routes(
    app: FastAPI, ui: UI, scoped: Callable[[str], dict[str, Any]], *, root_redirect: bool
) -> None:
    """The UI's routes on ``app``. Pages and actions declare their scope in the spec (the
    server's access tests walk it); the login form and the static files are public."""

    def get(path: str, scope: str, fn: Callable[..., Response]) -> None:
        def endpoint(request: Request) -> Response:
            return ui.page(
                request, scope, lambda viewer: fn(request, viewer, **request.path_params)
            )

        endpoint.__name__ = "ui_" + fn.__name__
        app.get(path, response_class=HTMLResponse, **scoped(scope))(endpoint)

    get("/ui/", "read", ui.models_page)
    get("/ui/m/{model:path}", "read", ui.model_page)
    get("/ui/v/{ref:path}", "read", ui.version_page)
    get("/ui/compare", "read", ui.compare_page)
    get("/ui/audit", "read", ui.audit_page)

    def post(path: str, fn: Callable[[Viewer, dict[str, str]], str]) -> None:
        async def endpoint(request: Request) -> Response:
            try:
                form = await ui.form(request)
            except errors.TvcError as exc:
                return ui.failure(request, exc, None)
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(ui.act, request, form, lambda viewer: fn(viewer, form))

        endpoint.__name__ = "ui_action_" + path.rsplit("/", 1)[-1]
        app.post(path, response_class=HTMLResponse, **scoped("write"))(endpoint)

    post("/ui/actions/alias", ui.move_alias)
    post("/ui/actions/rollback", ui.rollback)
    post("/ui/actions/state", ui.transition)
    post("/ui/actions/metric", ui.add_metric)

    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    if ui.auth.login:

        @app.get("/ui/login", include_in_schema=False)
        def login_form(request: Request, next: str = "/ui/") -> Response:
            return ui.render(request, None, "login.html", title="Log in", next=_local(next))

        @app.post("/ui/login", include_in_schema=False)
        async def login(request: Request) -> Response:
            form = await ui.form(request)
            secret = form.get("token", "").strip()
            target = _local(form.get("next", "/ui/"))
            try:
                ui.auth.tokens.authenticate(secret)
            except errors.AccessError as exc:
                return ui.render(
                    request,
                    None,
                    "login.html",
                    title="Log in",
                    next=target,
                    error=exc.message,
                    status=401,
                )
            resp = RedirectResponse(target, 303)
            secure = request.url.scheme == "https"
            resp.set_cookie(
                COOKIE, secret, httponly=True, samesite="strict", secure=secure, path="/"
            )
            return resp

        @app.post("/ui/logout", include_in_schema=False)
        def logout() -> Response:
            resp = RedirectResponse("/ui/login", 303)
            resp.delete_cookie(COOKIE, path="/")
            return resp

    if root_redirect and not any(getattr(r, "path", None) == "/" for r in app.routes):

        @app.get("/", include_in_schema=False)
        def root() -> Response:
            return RedirectResponse("/ui/", 307)


def _local(target: str) -> str:
    """Only a path of this UI may be a redirect target (no open redirect)."""
    if not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target
