"""The part of the Hugging Face Hub API that ``huggingface_hub`` and ``transformers`` call, so
``HF_ENDPOINT=http://server`` loads and publishes tvc models with the libraries people use.

Vocabulary, mapped once here:

- A Hub repo ``org/name`` is the tvc model ``org/name`` (single names work too).
- A Hub revision is a tvc reference: ``vN``, a branch, tag or alias (``production``), an id
  prefix, ``~N``; git's long forms ``refs/heads/B`` and ``refs/tags/T`` name the branch or tag.
- A version's *commit sha* is the first 40 hex digits of its version id. The id is the BLAKE3 of
  the version's immutable record, so the sha never changes meaning: the clients cache
  ``snapshots/<sha>/`` forever, and it resolves back as an id prefix. Moving an alias changes
  which sha the alias answers, never what a sha holds.
- A file's ETag is its SHA-256, recorded in its manifest at commit (the clients' HEAD times out
  after 10 s, so nothing is hashed per request; with a 64-hex ETag they verify ``local_dir``
  files against it). A file committed before SHA-256s were recorded gets the first 40 hex of
  its BLAKE3 instead: stable, and not 64 hex, so no client mistakes it for a SHA-256.

Every request carries a tvc token (``HF_TOKEN``) and is authorized by :class:`Server`. Errors
carry ``X-Error-Code`` as the Hub sends it, so each surfaces as the client's own exception: a
model the token may not read answers ``404 RepoNotFound`` (401 without a token), exactly as the
Hub answers for a private repo. Nothing here advertises Xet (no ``X-Xet-*``, no ``xetHash``).

Routing is done on the raw request path: the clients send a revision with ``/`` percent-encoded
as one segment, which the decoded path would split.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tvc import errors
from tvc.repo import names, paths
from tvc.repo.manifest import Manifest
from tvc.repo.version import FileEntry, Version, iso
from tvc.server.app import Forbidden, Server, _unlink
from tvc.server.tokens import Token
from tvc.store import hashing

SHA_LEN = 40
TREE_PAGE = 1000  # entries per tree page, as the Hub
MAX_BODY = 256 << 20  # a commit's ndjson (regular files inline, base64): large files go by LFS
LFS_MIN = 10 << 20  # the Hub's rule: files this large, or binary, go through Git LFS
LFS_DIR = "hf-lfs"
UPLOAD_TTL = 3600.0
STALE_UPLOAD = 86400.0
LFS_JSON = "application/vnd.git-lfs+json"
NO_XET = "this server does not speak Xet: upload with HF_HUB_DISABLE_XET=1 (Git LFS)"
HEX_RE = re.compile(r"^[0-9a-f]{64}$")
API_SUFFIXES = ("revision", "tree", "preupload", "commit")


class HfError(errors.TvcError):
    """An error with the Hub's status and ``X-Error-Code`` (the clients choose their exception
    by these); ``code`` None sends none."""

    def __init__(
        self, status: int, code: str | None, message: str, exit_code: int, commit: str | None
    ):
        super().__init__(message)
        self.status, self.code, self.exit_code, self.commit = status, code, exit_code, commit


def repo_not_found(model: str, status: int = 404) -> HfError:
    return HfError(status, "RepoNotFound", f"Repository not found: {model}", 4, None)


def sha_of(version: Version) -> str:
    return version.id[:SHA_LEN]


def etag_of(manifest: Manifest) -> str:
    return manifest.sha256 or manifest.digest[:SHA_LEN]


def error_response(exc: errors.TvcError) -> Response:
    """A TvcError as the Hub answers it: status, ``X-Error-Code``, ``X-Error-Message``; the body
    also carries tvc's own ``error`` and ``exit_code`` (as every tvc endpoint does)."""
    first = (exc.message.splitlines() or [""])[0][:500]  # a header: one line, ASCII
    headers = {"X-Error-Message": first.encode("ascii", "backslashreplace").decode()}
    if isinstance(exc, HfError):
        status, code = exc.status, exc.code
        if exc.commit:
            headers["X-Repo-Commit"] = exc.commit
    elif isinstance(exc, Forbidden):
        status, code = 403, None
    elif isinstance(exc, errors.AccessError):
        status, code = 401, None
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, errors.RefError):
        status, code = 404, "RevisionNotFound"
    elif isinstance(exc, errors.ConflictError | errors.ExistsError):
        status, code = 409, None
    elif isinstance(exc, errors.UsageError | errors.PathError):
        status, code = 400, None
    elif isinstance(exc, errors.FormatError | errors.IntegrityError):
        status, code = 422, None
    else:
        status, code = 503, None
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse(
        {"error": exc.message, "exit_code": exc.exit_code}, status_code=status, headers=headers
    )


@dataclass
class Target:
    """What a request path names: the model, and the path segments after the repo id."""

    model: str
    rest: list[str]


class HubEndpoint:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.reg = server.reg
        self.lfs_dir = server.staging / LFS_DIR
        self.key = secrets.token_bytes(32)  # signs upload URLs; a restart invalidates them

    # -- access ---------------------------------------------------------------------------
    def auth(self, request: Request, scope: str) -> Token:
        """The request's token of at least ``scope``. No token: 401 RepoNotFound, which the
        clients show as the Hub's "private or missing repo" (a wrong one: 401, the Hub's
        "invalid credentials"; a scope too small: 403)."""
        header = request.headers.get("authorization")
        if not header:
            raise HfError(401, "RepoNotFound", "authentication required: set HF_TOKEN", 12, None)
        token = self.server.token(header)
        if not token.allows(scope):
            raise Forbidden(f"token {token.name!r} has scope {token.scope}; this needs {scope}")
        return token

    def model_exists(self, model: str) -> bool:
        try:
            names.check_model_name(model)
            with self.reg.meta.read() as conn:
                self.reg.meta.model_id(conn, model)
            return True
        except errors.TvcError:
            return False

    def target(self, token: Token, segs: list[str], suffixes: tuple[str, ...]) -> Target:
        """Split ``org/name/...`` or ``name/...``: the two-segment id when that model exists
        (or when the second segment is no API word), else the single name. A model the token
        may not read is treated as absent: RepoNotFound, no oracle."""
        if not segs or not segs[0]:
            raise repo_not_found("")
        two = "/".join(segs[:2]) if len(segs) >= 2 else None
        one = segs[0]

        def visible(m: str | None) -> bool:
            return m is not None and token.may_read(m) and self.model_exists(m)

        if visible(two):
            return Target(two, segs[2:])
        if visible(one):
            return Target(one, segs[1:])
        model = two if two is not None and segs[1] not in suffixes else one
        return Target(model, segs[len(model.split("/")) :])

    def empty(self, model: str) -> bool:
        """A model created (``create_repo``) that has no version yet."""
        import sqlalchemy as sa

        from tvc.repo import schema as s

        with self.reg.meta.read() as conn:
            mid = self.reg.meta.model_id(conn, model)
            v = s.versions.c
            q = sa.select(sa.func.count()).where(v.model_id == mid, v.deleted.is_(None))
            return conn.execute(q).scalar_one() == 0

    def readable_model(self, token: Token, model: str) -> None:
        if not (token.may_read(model) and self.model_exists(model)):
            raise repo_not_found(model)

    # -- revisions ------------------------------------------------------------------------
    def resolve(self, model: str, rev: str | None) -> Version:
        """The version a Hub revision names (RevisionNotFound otherwise)."""
        rev = rev or names.DEFAULT_BRANCH
        for prefix in ("refs/heads/", "refs/tags/"):
            if rev.startswith(prefix) and len(rev) > len(prefix):
                rev = rev[len(prefix) :]
        try:
            return self.reg.resolve(f"{model}@{rev}")
        except (errors.RefError, errors.UsageError) as exc:
            raise HfError(
                404, "RevisionNotFound", f"Invalid rev id: {rev} ({exc})", 4, None
            ) from None

    def split_rev(self, model: str, segs: list[str], keep: int) -> tuple[Version, list[str]]:
        """The longest leading run of ``segs`` (leaving at least ``keep``) that names a
        revision: a client that did not percent-encode ``/`` in a revision still resolves."""
        if not segs:
            return self.resolve(model, None), []
        first_error = None
        for k in range(len(segs) - keep, 0, -1):
            try:
                return self.resolve(model, "/".join(segs[:k])), segs[k:]
            except HfError as exc:
                if first_error is None or k == 1:
                    first_error = exc
        raise first_error or self.resolve(model, segs[0])  # type: ignore[misc]

    # -- read API -------------------------------------------------------------------------
    def info(self, model: str, version: Version, blobs: bool) -> dict[str, Any]:
        self.reg.prefetch_manifests(fe.manifest_id for fe in version.files)
        siblings = []
        for fe in version.files:
            row: dict[str, Any] = {"rfilename": fe.path}
            if blobs:
                m = self.reg.manifest(fe.manifest_id)
                row |= {"size": fe.size, "blobId": blob_oid(fe)}
                if m.sha256:
                    row["lfs"] = {"sha256": m.sha256, "size": fe.size, "pointerSize": 134}
            siblings.append(row)
        org = model.split("/")[0] if "/" in model else None
        return {
            "_id": version.id[:24],
            "id": model,
            "modelId": model,
            "author": org,
            "sha": sha_of(version),
            "lastModified": hub_time(version.created),
            "createdAt": hub_time(version.created),
            "private": True,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": version.size,
        }

    def tree(self, version: Version, path: str, recursive: bool) -> list[dict[str, Any]]:
        """Files and folders under ``path`` (every depth, or one level), folders first at
        each place as the Hub lists them. A missing folder: 404 EntryNotFound."""
        self.reg.prefetch_manifests(fe.manifest_id for fe in version.files)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        dirs: set[str] = set()
        files = []
        for fe in version.files:
            if not fe.path.startswith(prefix):
                continue
            rel = fe.path[len(prefix) :]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.add(prefix + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                files.append(fe)
        if prefix and not dirs and not files:
            raise HfError(
                404,
                "EntryNotFound",
                f"{path} does not exist on {version.ref}",
                4,
                sha_of(version),
            )
        out: list[dict[str, Any]] = [
            {
                "type": "directory",
                "oid": hashing.digest(f"{version.id}:{d}".encode())[:SHA_LEN],
                "path": d,
            }
            for d in sorted(dirs)
        ]
        for fe in files:
            m = self.reg.manifest(fe.manifest_id)
            entry: dict[str, Any] = {
                "type": "file",
                "oid": blob_oid(fe),
                "size": fe.size,
                "path": fe.path,
            }
            if m.sha256:
                entry["lfs"] = {"oid": m.sha256, "size": fe.size, "pointerSize": 134}
            out.append(entry)
        return out

    def file(self, version: Version, path: str) -> tuple[FileEntry, Manifest]:
        for fe in version.files:
            if fe.path == path:
                return fe, self.reg.manifest(fe.manifest_id)
        raise HfError(
            404, "EntryNotFound", f"{path} does not exist on {version.ref}", 4, sha_of(version)
        )

    def stream(self, manifest: Manifest, start: int, end: int):
        """The verified bytes [start, end) of a file, chunk by chunk from the store (no copy of
        the file is made; each chunk is hashed as it is read)."""
        a, b = manifest.chunk_range(start, end - start)
        ids = [cid for cid, _n in manifest.chunks[a:b]]
        pos = manifest.starts[a] if ids else start
        for block in self.reg.store.read_many(ids):
            view = memoryview(block).cast("B")
            lo, hi = max(start - pos, 0), min(end - pos, len(view))
            pos += len(view)
            if lo < hi:
                yield bytes(view[lo:hi])

    # -- publishing -----------------------------------------------------------------------
    def sign(self, oid: str, size: int, token: Token) -> str:
        expires = int(time.time() + UPLOAD_TTL)
        msg = f"{oid}:{size}:{token.name}:{expires}".encode()
        mac = hmac.new(self.key, msg, hashlib.sha256).hexdigest()
        return f"{token.name}:{expires}:{mac}"

    def check_signature(self, oid: str, size: int, sig: str) -> Token:
        """The token an upload URL was signed for, if the signature holds and is fresh (the
        clients' LFS PUT sends no Authorization header, so the URL carries it)."""
        try:
            name, expires, mac = sig.rsplit(":", 2)
            msg = f"{oid}:{size}:{name}:{expires}".encode()
            good = hmac.new(self.key, msg, hashlib.sha256).hexdigest()
            if hmac.compare_digest(good, mac) and float(expires) > time.time():
                for t in self.server.tokens.load():
                    live = t.revoked is None and (t.expires is None or t.expires > time.time())
                    if t.name == name and live and t.allows("write"):
                        return t
        except ValueError:
            pass
        raise errors.AccessError("invalid or expired upload URL")

    def known_sha256(self, model: str) -> dict[str, FileEntry]:
        """SHA-256 → a file entry with that content, over every version of ``model``: what
        an upload need not send again."""
        if not self.model_exists(model):
            return {}
        import sqlalchemy as sa

        from tvc.repo import schema as s

        v = s.versions.c
        with self.reg.meta.read() as conn:
            mid = self.reg.meta.model_id(conn, model)
            vids = [
                r[0]
                for r in conn.execute(sa.select(v.id).where(v.model_id == mid, v.deleted.is_(None)))
            ]
        out: dict[str, FileEntry] = {}
        for vid in vids:
            version = self.reg.version(vid)
            self.reg.prefetch_manifests(fe.manifest_id for fe in version.files)
            for fe in version.files:
                sha = self.reg.manifest(fe.manifest_id).sha256
                if sha:
                    out.setdefault(sha, fe)
        return out

    def drop_stale_uploads(self) -> None:
        """LFS objects uploaded but named by no commit for a day are dropped (a client that
        died between upload and commit; the next batch asks for them again)."""
        cutoff = time.time() - STALE_UPLOAD
        with contextlib.suppress(OSError), os.scandir(self.lfs_dir) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    if e.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(e.path)

    def lfs_path(self, oid: str):
        return self.lfs_dir / oid

    def head_of(self, model: str, branch: str) -> Version | None:
        """The version a commit to ``branch`` builds on (tvc's rule: a new branch starts from
        main), or None for a model without versions."""
        if not self.model_exists(model):
            return None
        with self.reg.meta.read() as conn:
            mid = self.reg.meta.model_id(conn, model)
            vid = self.reg.meta.ref_target(conn, mid, "branch", branch)
            for kind in ("tag", "alias"):
                if vid is None and self.reg.meta.ref_target(conn, mid, kind, branch):
                    raise errors.UsageError(f"{model}@{branch} is a {kind}: commits go to a branch")
            if vid is None:
                vid = self.reg.meta.ref_target(conn, mid, "branch", names.DEFAULT_BRANCH)
            return self.reg.meta.load_version(conn, vid) if vid else None

    def commit(self, token: Token, model: str, branch: str, lines: list[dict[str, Any]], work):
        """Record an ndjson commit as a new version on ``branch``: the head's files, less the
        deleted ones, with the added ones (regular files written to ``work``, LFS objects
        linked from the verified uploads, or carried over when their content is here)."""
        header: dict[str, Any] = {}
        added: dict[str, FileEntry | None] = {}  # path → kept entry (None: a file in work)
        deleted_files: set[str] = set()
        deleted_dirs: list[str] = []
        known: dict[str, FileEntry] | None = None
        for line in lines:
            key, value = line.get("key"), line.get("value") or {}
            if key == "header":
                header = value
            elif key in ("file", "lfsFile"):
                path = check_path(value.get("path", ""))
                deleted_files.discard(path)
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise errors.UsageError(f"{path}: only base64 content is accepted")
                    try:
                        data = base64.b64decode(value.get("content", ""), validate=True)
                    except ValueError as exc:
                        raise errors.UsageError(f"{path}: content is not base64") from exc
                    write_file(work / path, data)
                    added[path] = None
                    continue
                oid = str(value.get("oid", ""))
                if not HEX_RE.match(oid) or value.get("algo", "sha256") != "sha256":
                    raise errors.UsageError(f"{path}: lfsFile needs a sha256 oid")
                staged = self.lfs_path(oid)
                if staged.exists():
                    (work / path).parent.mkdir(parents=True, exist_ok=True)
                    os.link(staged, work / path)
                    added[path] = None
                    continue
                if known is None:
                    known = self.known_sha256(model)
                have = known.get(oid)
                if have is None:
                    raise errors.UsageError(f"{path}: LFS object {oid} was not uploaded")
                added[path] = FileEntry(path, have.size, have.digest, have.format, have.manifest_id)
            elif key == "deletedFile":
                deleted_files.add(check_path(value.get("path", "")))
            elif key == "deletedFolder":
                deleted_dirs.append(check_path(value.get("path", "").rstrip("/")) + "/")
            else:
                raise errors.UsageError(f"unknown commit line {key!r}")
        head = self.head_of(model, branch)
        parent = header.get("parentCommit")
        if parent and (head is None or not head.id.startswith(str(parent).lower())):
            raise HfError(412, None, f"{model}@{branch} has moved since {parent}", 11, None)
        keep = []
        if head is not None:
            for fe in head.files:
                if fe.path in added or fe.path in deleted_files:
                    continue
                if any(fe.path.startswith(d) for d in deleted_dirs):
                    continue
                keep.append(fe)
        keep += [fe for fe in added.values() if fe is not None]
        new_files = [p for p, fe in added.items() if fe is None]
        if not added and not deleted_files and not deleted_dirs:
            raise errors.UsageError("nothing to commit: the commit adds and deletes no file")
        if not new_files and not keep:
            raise errors.UsageError("a commit must leave at least one file in the version")
        message = str(header.get("summary") or "Upload with huggingface_hub")
        if header.get("description"):
            message += "\n\n" + str(header["description"])
        result = self.reg.commit(
            model,
            [work] if new_files else [],
            message,
            branch=branch,
            keep=keep,
            expected_head=head.id if head is not None else None,
            author=token.name,
            detect_code=False,
        )
        for line in lines:  # what the store now holds needs no staged copy
            if line.get("key") == "lfsFile":
                _unlink(self.lfs_path(str(line["value"].get("oid"))))
        return result


def hub_time(ts: float) -> str:
    """The Hub's timestamp form (``…Z``; the clients parse no other)."""
    return iso(ts).replace("+00:00", "Z")


def blob_oid(fe: FileEntry) -> str:
    """A 40-hex id of the content (not git's blob SHA-1, which tvc does not compute)."""
    return fe.digest[:SHA_LEN]


def check_path(path: str) -> str:
    path = paths.check_stored_path(str(path))
    if path.split("/")[0] in paths.SKIP_DIRS:
        raise errors.UsageError(f"{path}: a path under {path.split('/')[0]} cannot be stored")
    return path


def write_file(target, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    with open(target, "xb") as f:
        f.write(data)


def raw_segments(request: Request, prefix: str) -> list[str]:
    """The path after ``prefix``, split on ``/`` *before* percent-decoding each segment."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    text = raw.decode("latin-1").split("?", 1)[0]
    if not text.startswith(prefix):
        return []
    return [unquote(s) for s in text[len(prefix) :].split("/")]


def flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` → [start, end); None: the whole file.
    Anything else (several ranges, past the end): HfError 416."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    bad = HfError(416, None, f"Range {header!r} not satisfiable (size {size})", 2, None)
    if not m or (not m.group(1) and not m.group(2)) or size == 0:
        raise bad
    if not m.group(1):
        n = int(m.group(2))
        if n == 0:
            raise bad
        return max(size - n, 0), size
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size
    if start >= size or end <= start:
        raise bad
    return start, min(end, size)


def install(app: FastAPI, server: Server) -> None:
    hub = HubEndpoint(server)
    read, write = server.scoped("read"), server.scoped("write")

    def guarded(fn):
        """Run ``fn`` and answer its TvcError as the Hub would (headers and codes)."""

        async def run(*args: Any) -> Response:
            try:
                return await run_in_threadpool(fn, *args)
            except errors.TvcError as exc:
                return error_response(exc)

        return run

    # -- read API ------------------------------------------------------------------------
    def _models_get(request: Request) -> Response:
        token = hub.auth(request, "read")
        segs = raw_segments(request, "/api/models/")
        t = hub.target(token, segs, API_SUFFIXES)
        if t.rest and t.rest[0] in ("xet-write-token", "xet-read-token"):
            raise HfError(501, None, NO_XET, 2, None)  # for any model: no oracle
        hub.readable_model(token, t.model)
        if not t.rest:
            return JSONResponse(
                hub.info(t.model, hub.resolve(t.model, None), flag(request, "blobs"))
            )
        kind, rest = t.rest[0], t.rest[1:]
        if kind == "revision" and rest:
            version = hub.resolve(t.model, "/".join(rest))
            return JSONResponse(hub.info(t.model, version, flag(request, "blobs")))
        if kind == "tree":
            version, sub = hub.split_rev(t.model, rest, 0)
            entries = hub.tree(version, "/".join(sub), flag(request, "recursive"))
            start = int(request.query_params.get("cursor") or 0)
            page = entries[start : start + TREE_PAGE]
            headers = {"X-Repo-Commit": sha_of(version)}
            if start + TREE_PAGE < len(entries):
                nxt = request.url.include_query_params(cursor=start + TREE_PAGE)
                headers["Link"] = f'<{nxt}>; rel="next"'
            return JSONResponse(page, headers=headers)
        raise HfError(404, None, f"no such endpoint: {request.url.path}", 2, None)

    models_get = guarded(_models_get)

    @app.get("/api/models/{repo_path:path}", **read, summary="Hub: repo info and tree")
    async def hf_models(repo_path: str, request: Request) -> Response:
        """``/api/models/{repo}[/revision/{rev}]`` (repo info; ``?blobs=true`` adds sizes and
        SHA-256s) and ``/api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=true``; paged
        by ``Link``)."""
        return await models_get(request)

    def _resolve(request: Request, head: bool) -> Response:
        token = hub.auth(request, "read")
        segs = raw_segments(request, "/")
        t = hub.target(token, segs, ("resolve",))
        hub.readable_model(token, t.model)
        if not t.rest or t.rest[0] != "resolve" or len(t.rest) < 3:
            raise HfError(404, None, f"no such endpoint: {request.url.path}", 2, None)
        try:
            version, rest = hub.split_rev(t.model, t.rest[1:], 1)
        except HfError as exc:
            if exc.code == "RevisionNotFound" and hub.empty(t.model):
                # A repo created but not yet committed to: every file is missing (what
                # push_to_hub expects of a new repo's model card), not the revision.
                raise HfError(
                    404, "EntryNotFound", f"{t.model} has no files yet", 4, None
                ) from None
            raise
        fe, manifest = hub.file(version, "/".join(rest))
        span = parse_range(request.headers.get("range"), fe.size)
        start, end = span or (0, fe.size)
        headers = {
            "X-Repo-Commit": sha_of(version),
            "ETag": f'"{etag_of(manifest)}"',
            "Accept-Ranges": "bytes",
            "Content-Length": str(end - start),
            "Content-Type": "application/octet-stream",
        }
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{fe.size}"
        if head:
            return Response(status_code=status, headers=headers)
        return StreamingResponse(hub.stream(manifest, start, end), status, headers=headers)

    resolve_get = guarded(lambda request: _resolve(request, False))
    resolve_head = guarded(lambda request: _resolve(request, True))

    for pattern in ("/{org}/{name}/resolve/{rest:path}", "/{name}/resolve/{rest:path}"):

        @app.get(pattern, **read, summary="Hub: download a file (Range supported)")
        async def hf_resolve_get(request: Request) -> Response:
            """The file's bytes, streamed from its verified chunks, with ``X-Repo-Commit``,
            the ETag (SHA-256) and ``Content-Length``; ``Range`` answers 206."""
            return await resolve_get(request)

        # HEAD is GET without the body: kept out of the spec, whose access matrix sends
        # GET to the same path and reads a body.
        @app.head(pattern, include_in_schema=False)
        async def hf_resolve_head(request: Request) -> Response:
            return await resolve_head(request)

    @app.get("/api/agent-harnesses", **read, summary="Hub: client settings (none)")
    async def hf_harnesses(request: Request) -> Response:
        """huggingface_hub 2.x asks once a day; an empty answer stops it asking every run."""

        def answer(request: Request) -> Response:
            hub.auth(request, "read")
            return JSONResponse({"standardEnvVars": [], "harnesses": {}})

        return await guarded(answer)(request)

    # -- publishing ----------------------------------------------------------------------
    def _create_repo(request: Request, body: dict[str, Any]) -> Response:
        token = hub.auth(request, "write")
        if body.get("type", "model") not in ("model", None):
            raise errors.UsageError("this server holds models only")
        name, org = str(body.get("name") or ""), body.get("organization")
        model = f"{org}/{name}" if org else name
        names.check_model_name(model)
        if not token.may_read(model):
            raise Forbidden(f"token {token.name!r} may not write {model}")
        url = f"{str(request.base_url).rstrip('/')}/{model}"
        if hub.model_exists(model):
            return JSONResponse(
                {"error": "You already created this model repo", "url": url}, status_code=409
            )
        # The model, without versions yet: it exists (to the clients, as an empty repo).
        with hub.reg.meta.write() as conn:
            hub.reg.meta.model_id(conn, model, create=True)
        return JSONResponse({"url": url, "name": model})

    create_repo = guarded(_create_repo)

    @app.post("/api/repos/create", **write, summary="Hub: create a repo")
    async def hf_create_repo(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        return await create_repo(request, body if isinstance(body, dict) else {})

    def _models_post(request: Request, body: bytes) -> Response:
        token = hub.auth(request, "write")
        segs = raw_segments(request, "/api/models/")
        t = hub.target(token, segs, API_SUFFIXES)
        if not token.may_read(t.model):
            raise repo_not_found(t.model)
        names.check_model_name(t.model)
        if len(t.rest) < 2 or t.rest[0] not in ("preupload", "commit"):
            raise HfError(404, None, f"no such endpoint: {request.url.path}", 2, None)
        branch = "/".join(t.rest[1:])
        if branch.startswith("refs/heads/"):
            branch = branch[len("refs/heads/") :]
        names.check_ref_name(branch, "branch")
        if flag(request, "create_pr"):
            raise errors.UsageError("pull requests are not supported: commit to a branch")
        if t.rest[0] == "preupload":
            try:
                files = json.loads(body or b"{}").get("files", [])
            except (ValueError, AttributeError) as exc:
                raise errors.UsageError(f"preupload: malformed JSON ({exc})") from exc
            return JSONResponse({"files": [upload_mode(f) for f in files]})
        lines = []
        for raw in body.splitlines():
            if raw.strip():
                try:
                    lines.append(json.loads(raw))
                except ValueError as exc:
                    raise errors.UsageError(f"commit: malformed ndjson line ({exc})") from exc
        work = server.staging / f"hf-commit-{secrets.token_hex(8)}"
        work.mkdir(parents=True)
        try:
            result = hub.commit(token, t.model, branch, lines, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        base = str(request.base_url).rstrip("/")
        sha = sha_of(result.version)
        return JSONResponse(
            {
                "commitUrl": f"{base}/{t.model}/commit/{sha}",
                "commitOid": sha,
                "commitMessage": result.message,
                "pullRequestUrl": None,
                "tvcVersion": result.ref,
            }
        )

    models_post = guarded(_models_post)

    @app.post("/api/models/{repo_path:path}", **write, summary="Hub: preupload and commit")
    async def hf_models_post(repo_path: str, request: Request) -> Response:
        """``/api/models/{repo}/preupload/{branch}`` (which files go by Git LFS) and
        ``/api/models/{repo}/commit/{branch}`` (ndjson: a new tvc version on the branch)."""
        body = bytearray()
        async for block in request.stream():
            body += block
            if len(body) > MAX_BODY:
                return error_response(errors.UsageError("request too large: use Git LFS"))
        return await models_post(request, bytes(body))

    @app.post("/api/validate-yaml", **write, summary="Hub: README metadata check (accepts)")
    async def hf_validate_yaml(request: Request) -> Response:
        def answer(request: Request) -> Response:
            hub.auth(request, "write")
            return JSONResponse({"errors": [], "warnings": []})

        return await guarded(answer)(request)

    def _lfs_batch(request: Request, body: dict[str, Any]) -> Response:
        token = hub.auth(request, "write")
        segs = raw_segments(request, "/")
        repo = "/".join(segs[: segs.index("info")]) if "info" in segs else ""
        model = repo.removesuffix(".git")
        if not token.may_read(model):
            raise repo_not_found(model)
        names.check_model_name(model)
        if body.get("operation") != "upload":
            raise errors.UsageError("this server accepts LFS uploads only (download: /resolve)")
        hub.drop_stale_uploads()
        known = hub.known_sha256(model)
        base = str(request.base_url).rstrip("/")
        objects = []
        for obj in body.get("objects", [])[:10000]:
            oid, size = str(obj.get("oid", "")), obj.get("size")
            if not HEX_RE.match(oid) or not isinstance(size, int) or size < 0:
                objects.append(
                    {"oid": oid, "size": size, "error": {"code": 422, "message": "bad oid/size"}}
                )
                continue
            row: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in known and not hub.lfs_path(oid).exists():
                sig = hub.sign(oid, size, token)
                row["actions"] = {
                    "upload": {
                        "href": f"{base}/api/hf-lfs/{oid}/{size}?sig={sig}",
                        "expires_in": int(UPLOAD_TTL),
                    }
                }
            objects.append(row)
        return JSONResponse(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            media_type=LFS_JSON,
        )

    lfs_batch = guarded(_lfs_batch)

    for pattern in (
        "/{org}/{name}.git/info/lfs/objects/batch",
        "/{name}.git/info/lfs/objects/batch",
    ):

        @app.post(pattern, **write, summary="Git LFS batch API (uploads)")
        async def hf_lfs_batch(request: Request) -> Response:
            """Which objects the client must send (those tvc holds already are skipped), each
            with a signed upload URL valid for an hour."""
            try:
                body = json.loads(await request.body())
            except ValueError:
                body = {}
            return await lfs_batch(request, body if isinstance(body, dict) else {})

    @app.put("/api/hf-lfs/{oid}/{size}", **write, summary="Git LFS upload of one object")
    async def hf_lfs_put(oid: str, size: str, request: Request) -> Response:
        """The object's bytes, kept only if they hash to ``oid`` and have ``size`` bytes; the
        commit that names it then takes them into the store."""
        try:
            sig = request.query_params.get("sig")
            if request.headers.get("authorization") or not sig:
                hub.auth(request, "write")
            n = int(size)
            if not HEX_RE.match(oid) or n < 0:
                raise errors.UsageError("bad LFS object name")
            if not request.headers.get("authorization"):
                hub.check_signature(oid, n, sig or "")
            hub.lfs_dir.mkdir(parents=True, exist_ok=True)
            tmp = hub.lfs_dir / f".{oid}.{secrets.token_hex(4)}"
            h, got = hashlib.sha256(), 0
            try:
                with open(tmp, "xb") as f:
                    async for block in request.stream():
                        got += len(block)
                        if got > n:
                            raise errors.IntegrityError(f"LFS object {oid}: more than {n} bytes")
                        h.update(block)
                        f.write(block)
                if got != n or h.hexdigest() != oid:
                    raise errors.IntegrityError(f"LFS object {oid}: content does not match")
                os.replace(tmp, hub.lfs_path(oid))
            finally:
                _unlink(tmp)
        except ValueError:
            return error_response(errors.UsageError("bad LFS object size"))
        except errors.TvcError as exc:
            return error_response(exc)
        return Response(status_code=200)


def upload_mode(f: Any) -> dict[str, Any]:
    """``lfs`` for large or binary files (as the Hub decides), ``regular`` for the rest."""
    if not isinstance(f, dict):
        raise errors.UsageError("preupload: each file is an object")
    path, size = str(f.get("path", "")), f.get("size", 0)
    try:
        sample = base64.b64decode(f.get("sample") or "")
    except ValueError:
        sample = b""
    lfs = (isinstance(size, int) and size >= LFS_MIN) or b"\x00" in sample
    return {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
