"""Helpers of the Hugging Face endpoint tests (tests/server/hf): names and a counting proxy."""

from __future__ import annotations

import http.server
import threading

import httpx

MODEL = "acme/tiny"
PRIVATE = "secret/model"


class Counter:
    """A loopback proxy in front of the server that counts the requests it forwards: what a
    client asked for, seen from outside the client and the server."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                counter.requests.append((self.command, self.path))
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                # Host kept: URLs the server builds (LFS upload links) point back here.
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                with httpx.Client(timeout=60) as client:
                    resp = client.request(
                        self.command, upstream + self.path, headers=headers, content=body
                    )
                data = b"" if self.command == "HEAD" else resp.content
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                if self.command != "HEAD" and "content-length" not in resp.headers:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = _forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Counter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
