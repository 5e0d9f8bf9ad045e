"""Fault injection by wrapping a backend (never by mocking it).

``FailingBackend`` fails chosen operations after N successes; ``BitFlipBackend`` flips one bit
(``^ 0xFF`` on a byte — writing a fixed byte would be a no-op one time in 256) in what ``get``
returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tvc.errors import StorageError
from tvc.store.backends.base import Backend


class Wrapper(Backend):
    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def _put(self, name: str, data: bytes | Path) -> None:
        self.inner._put(name, data)

    def _get(self, name: str, offset: int, length: int | None) -> bytes:
        return self.inner._get(name, offset, length)

    def _exists(self, name: str) -> bool:
        return self.inner._exists(name)

    def _size(self, name: str) -> int:
        return self.inner._size(name)

    def _mtime(self, name: str) -> float:
        return self.inner._mtime(name)

    def _list(self, prefix: str) -> Iterator[str]:
        return self.inner._list(prefix)

    def _delete(self, name: str) -> None:
        self.inner._delete(name)

    def local_path(self, name: str):
        return self.inner.local_path(name)


class FailingBackend(Wrapper):
    """``plan`` maps an operation to a string like "rrE": r = run normally, E = raise."""

    def __init__(self, inner: Backend, **plan: str) -> None:
        super().__init__(inner)
        self.plan = {op: list(p) for op, p in plan.items()}

    def _step(self, op: str) -> None:
        steps = self.plan.get(op)
        if steps and steps.pop(0) == "E":
            raise StorageError(f"injected {op} failure: disk full")

    def _put(self, name, data):
        self._step("put")
        super()._put(name, data)

    def _get(self, name, offset, length):
        self._step("get")
        return super()._get(name, offset, length)


class BitFlipBackend(Wrapper):
    def __init__(self, inner: Backend, at: int = 0) -> None:
        super().__init__(inner)
        self.at = at

    def _get(self, name, offset, length):
        data = bytearray(super()._get(name, offset, length))
        if data:
            data[self.at % len(data)] ^= 0xFF
        return bytes(data)


class S3Proxy:
    """A loopback HTTP proxy in front of a real S3 server: fault injection one level below a
    backend, by wrapping the server rather than mocking the client.

    Every request is recorded (method, path, query, headers) and forwarded unchanged (the
    SigV4 signature covers the Host header, which is passed through). ``plan`` decides per
    request: a function ``(method, path, query, headers) -> None | int | "drop"`` — None
    forwards it, a status code answers with that S3 error instead, "drop" closes the connection
    without an answer (a reset/timeout as a client sees it).
    """

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        import threading
        import urllib.parse

        self.requests: list[tuple[str, str, str, dict[str, str]]] = []
        self.plan = lambda method, path, query, headers: None
        up = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.requests.append((self.command, path, query, headers))
                action = proxy.plan(self.command, path, query, headers)
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if isinstance(action, int):
                    code = {503: "SlowDown", 500: "InternalError", 400: "InvalidRequest"}.get(
                        action, "Injected"
                    )
                    payload = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        f"<Message>injected {action}</Message></Error>"
                    ).encode()
                    self.send_response(action)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                try:
                    fwd = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    conn.request(self.command, self.path, body=body, headers=fwd)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                head = self.command == "HEAD"
                for k, v in resp.getheaders():
                    if k.lower() in ("connection", "transfer-encoding"):
                        continue
                    if k.lower() != "content-length" or head:
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def seen(self, method: str, query_has: str = "") -> list[tuple[str, str, str, dict]]:
        return [r for r in self.requests if r[0] == method and query_has in r[2]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
